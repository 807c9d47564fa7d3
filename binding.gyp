{
  "targets": [
    {
      "target_name": "splicer",
      "conditions": [
        ["OS=='linux'", {
          "sources": [
            "native/addon.cc",
            "native/addon_acceptor.cc",
            "native/addon_args.cc",
            "native/addon_delivery.cc",
            "native/addon_mux.cc",
            "native/engine.cc",
            "native/handshake_io.cc",
            "native/listen_socket.cc",
            "native/loop.cc",
            "native/loop_pump.cc",
            "native/loop_record.cc",
            "native/malloc_tuning.cc",
            "native/mux_session.cc",
            "native/mux_session_send.cc",
            "native/mux_session_streams.cc",
            "native/notify_socket.cc",
            "native/pcap_record.cc",
            "native/pipe_pool.cc",
            "native/recorder_queue.cc",
            "native/recorder_writer.cc"
          ],
          "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
          "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"],
          "cflags!": ["-fno-exceptions"],
          "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
          "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fexceptions"]
        }]
      ]
    }
  ]
}
