'use strict';
// node-gyp compiles against the headers of the Node that runs it, and downloads them from
// nodejs.org unless told where they are. Official tarballs and distribution packages install
// them beside the binary (<prefix>/include/node): pointing node-gyp there makes the build work
// offline. An explicit nodedir (npm config, environment) is left as it is.
const fs = require('node:fs');
const path = require('node:path');

/** `env` with npm_config_nodedir set to the running Node's prefix when its headers are there. */
function withLocalHeaders(env) {
  if (env.npm_config_nodedir) return env;
  const prefix = path.join(path.dirname(process.execPath), '..');
  if (!fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) return env;
  return { ...env, npm_config_nodedir: prefix };
}

module.exports = { withLocalHeaders };
