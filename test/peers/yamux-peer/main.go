// A hashicorp/yamux peer for splicer's mux tests and benchmarks, built offline in GOPATH mode
// against Debian's golang-github-hashicorp-yamux-dev.
//
//	yamux-peer echo-server                  accepts one connection; echoes every stream, FIN after the peer's FIN
//	yamux-peer echo-client ADDR N BYTES     opens N streams at once; writes BYTES seeded bytes on each while
//	                                        reading BYTES back; prints one JSON line per stream with both hashes
//	yamux-peer sink-server                  accepts connections; per stream: 8-byte length, that many bytes, then 8 bytes back
//	yamux-peer bulk-client ADDR BYTES       one stream through sink-server's protocol; prints seconds and CPU seconds
//	yamux-peer forward-in ADDR              accepts TCP connections; carries each as a stream of one session dialled to ADDR
//	yamux-peer forward-out ADDR             accepts sessions; carries each of their streams to a TCP connection to ADDR
//
// Servers print "listening PORT" on stdout once bound to 127.0.0.1. -window sets MaxStreamWindowSize.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"math/rand"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

var window = flag.Int("window", 256*1024, "yamux MaxStreamWindowSize")

func config() *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = uint32(*window)
	c.LogOutput = ioutil.Discard
	return c
}

func die(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func listen() net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die(err)
	}
	fmt.Printf("listening %d\n", l.Addr().(*net.TCPAddr).Port)
	return l
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func echoServer() {
	l := listen()
	conn, err := l.Accept()
	if err != nil {
		die(err)
	}
	session, err := yamux.Server(conn, config())
	if err != nil {
		die(err)
	}
	for {
		stream, err := session.Accept()
		if err != nil {
			os.Exit(0) // the session ended
		}
		go func(s net.Conn) {
			io.Copy(s, s)
			s.Close()
		}(stream)
	}
}

type result struct {
	Stream   int    `json:"stream"`
	Sent     string `json:"sent"`
	Received string `json:"received"`
	Bytes    int64  `json:"bytes"`
	Error    string `json:"error,omitempty"`
}

func echoClient(addr string, n int, size int64) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		die(err)
	}
	session, err := yamux.Client(conn, config())
	if err != nil {
		die(err)
	}
	results := make(chan result, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			r := result{Stream: i}
			s, err := session.OpenStream()
			if err != nil {
				r.Error = err.Error()
				results <- r
				return
			}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := sha256.New()
				got, err := io.CopyN(h, s, size)
				r.Bytes = got
				r.Received = hex.EncodeToString(h.Sum(nil))
				if err != nil {
					r.Error = err.Error()
				}
			}()
			src := rand.New(rand.NewSource(int64(i) + 1))
			h := sha256.New()
			buf := make([]byte, 32*1024)
			for left := size; left > 0; {
				k := int64(1 + src.Intn(len(buf)))
				if k > left {
					k = left
				}
				src.Read(buf[:k])
				h.Write(buf[:k])
				if _, err := s.Write(buf[:k]); err != nil {
					r.Error = err.Error()
					break
				}
				left -= k
			}
			r.Sent = hex.EncodeToString(h.Sum(nil))
			// Read everything back before the FIN: this yamux version's Read returns EOF once its own side closed.
			wg.Wait()
			s.Close()
			results <- r
		}(i)
	}
	enc := json.NewEncoder(os.Stdout)
	for i := 0; i < n; i++ {
		enc.Encode(<-results)
	}
	// A graceful end: our FIN on the connection after every stream's, then read until the peer
	// closes too. Closing at once would reset the connection if a frame of the peer's were unread
	// (a window update, a ping), and a reset can drop our last streams' FINs at the peer.
	conn.(*net.TCPConn).CloseWrite()
	select {
	case <-session.CloseChan():
	case <-time.After(5 * time.Second):
	}
	session.Close()
}

func sinkServer() {
	l := listen()
	for {
		conn, err := l.Accept()
		if err != nil {
			die(err)
		}
		go func() {
			session, err := yamux.Server(conn, config())
			if err != nil {
				return
			}
			for {
				stream, err := session.Accept()
				if err != nil {
					return
				}
				go func(s net.Conn) {
					defer s.Close()
					var hdr [8]byte
					if _, err := io.ReadFull(s, hdr[:]); err != nil {
						return
					}
					n := int64(binary.BigEndian.Uint64(hdr[:]))
					got, _ := io.CopyN(ioutil.Discard, s, n)
					binary.BigEndian.PutUint64(hdr[:], uint64(got))
					s.Write(hdr[:])
				}(stream)
			}
		}()
	}
}

func bulkClient(addr string, size int64) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		die(err)
	}
	session, err := yamux.Client(conn, config())
	if err != nil {
		die(err)
	}
	cpu0 := cpuSeconds()
	t0 := time.Now()
	s, err := session.OpenStream()
	if err != nil {
		die(err)
	}
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	s.Write(hdr[:])
	buf := make([]byte, 256*1024)
	for left := size; left > 0; {
		k := int64(len(buf))
		if k > left {
			k = left
		}
		if _, err := s.Write(buf[:k]); err != nil {
			die(err)
		}
		left -= k
	}
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		die(err)
	}
	seconds := time.Since(t0).Seconds()
	fmt.Printf("{\"seconds\":%f,\"cpu\":%f,\"bytes\":%d}\n", seconds, cpuSeconds()-cpu0, binary.BigEndian.Uint64(hdr[:]))
	s.Close()
	session.Close()
}

// pipeBoth copies both ways between a TCP connection and a stream. hashicorp/yamux (this version)
// has no half-close: a stream's Close() ends its reading too. So a client's FIN is not passed on
// (the stream stays open until the answer has come back), and a target's end closes the stream;
// then both are closed.
func pipeBoth(tcp net.Conn, stream *yamux.Stream, targetSide bool) {
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(stream, tcp)
		if targetSide {
			stream.Close()
		}
		done <- struct{}{}
	}()
	go func() {
		io.Copy(tcp, stream)
		tcp.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}()
	<-done
	<-done
	stream.Close()
	tcp.Close()
}

// forwardIn: the n:1 side of a mux forwarder, as a Go program built on hashicorp/yamux does it.
func forwardIn(addr string) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		die(err)
	}
	session, err := yamux.Client(conn, config())
	if err != nil {
		die(err)
	}
	l := listen()
	for {
		c, err := l.Accept()
		if err != nil {
			die(err)
		}
		s, err := session.OpenStream()
		if err != nil {
			c.Close()
			continue
		}
		go pipeBoth(c, s, false)
	}
}

// forwardOut: the 1:n side: every stream of every accepted session to a new TCP connection to addr.
func forwardOut(addr string) {
	l := listen()
	for {
		conn, err := l.Accept()
		if err != nil {
			die(err)
		}
		go func() {
			session, err := yamux.Server(conn, config())
			if err != nil {
				conn.Close()
				return
			}
			for {
				s, err := session.AcceptStream()
				if err != nil {
					return
				}
				go func() {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						s.Close()
						return
					}
					pipeBoth(c, s, true)
				}()
			}
		}()
	}
}

func main() {
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		die(fmt.Errorf("usage: yamux-peer echo-server|echo-client ADDR N BYTES|sink-server|bulk-client ADDR BYTES|forward-in ADDR|forward-out ADDR"))
	}
	num := func(i int) int64 {
		v, err := strconv.ParseInt(args[i], 10, 64)
		if err != nil {
			die(err)
		}
		return v
	}
	switch args[0] {
	case "echo-server":
		echoServer()
	case "echo-client":
		echoClient(args[1], int(num(2)), num(3))
	case "sink-server":
		sinkServer()
	case "bulk-client":
		bulkClient(args[1], num(2))
	case "forward-in":
		forwardIn(args[1])
	case "forward-out":
		forwardOut(args[1])
	default:
		die(fmt.Errorf("unknown mode %q", args[0]))
	}
}
