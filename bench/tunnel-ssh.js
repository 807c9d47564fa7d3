// `ssh -R` through a throwaway sshd on a loopback port, for bench/tunnel.js: what people use to
// publish a service from behind NAT when they have no tunnel tool. Nothing here leaves 127.0.0.1.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { HOST, spawnChild, stopChild, freePort, waitListening, which, sleep, isListening } from './lib.js';

/** Why ssh -R cannot run here, or null. */
export function sshUnavailable() {
  if (!existsSync('/usr/sbin/sshd') && !which('sshd')) return 'sshd not installed (apt-get install openssh-server)';
  if (!which('ssh')) return 'ssh not installed (apt-get install openssh-client)';
  if (!which('ssh-keygen')) return 'ssh-keygen not installed';
  return null;
}

/**
 * Starts sshd (foreground, its own config, host key and authorized key, loopback only) and an
 * `ssh -N -R` client publishing each of `targets` ({ name: port }) on a remote loopback port.
 * Resolves with { ports: { name: publicPort }, pids: [sshd, ssh], cipher, stop() }.
 */
export async function startSshTunnel(targets, { cipher = 'aes128-gcm@openssh.com' } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'splicer-bench-ssh-'));
  const sshd = existsSync('/usr/sbin/sshd') ? '/usr/sbin/sshd' : which('sshd');
  const user = userInfo().username;
  let server;
  let client;
  try {
    for (const [file, type] of [['host_key', 'ed25519'], ['client_key', 'ed25519']]) {
      execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', 'splicer-bench', '-f', path.join(dir, file)]);
    }
    writeFileSync(path.join(dir, 'authorized_keys'), readFileSync(path.join(dir, 'client_key.pub')));
    // sshd checks its privilege separation directory even when it runs as the only user it serves.
    if (process.getuid?.() === 0 && !existsSync('/run/sshd')) mkdirSync('/run/sshd', { mode: 0o755 });
    const port = await freePort();
    writeFileSync(path.join(dir, 'sshd_config'), [
      `Port ${port}`,
      `ListenAddress ${HOST}`,
      `HostKey ${path.join(dir, 'host_key')}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'AllowTcpForwarding remote',
      'GatewayPorts no',
      'MaxStartups 100',
      'LogLevel ERROR',
      '',
    ].join('\n'));
    server = spawnChild(sshd, ['-D', '-e', '-f', path.join(dir, 'sshd_config')]);
    await waitListening(port, server, 10000);
    const remote = {};
    const forwards = [];
    for (const [name, target] of Object.entries(targets)) {
      remote[name] = await freePort();
      forwards.push('-R', `${HOST}:${remote[name]}:${HOST}:${target}`);
    }
    client = spawnChild('ssh', [
      '-N', '-T', '-p', String(port), '-i', path.join(dir, 'client_key'), '-c', cipher,
      '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'ExitOnForwardFailure=yes', '-o', 'LogLevel=ERROR',
      ...forwards, `${user}@${HOST}`,
    ]);
    const deadline = Date.now() + 10000;
    while (!Object.values(remote).every((p) => isListening(p))) {
      if (client.exitCode !== null) throw new Error(`ssh exited: ${client.stderrText.trim().slice(-500)}`);
      if (Date.now() > deadline) throw new Error(`ssh -R did not publish its ports: ${client.stderrText.trim().slice(-500)}`);
      await sleep(20);
    }
    return {
      ports: remote,
      pids: [server.pid, client.pid],
      cipher,
      async stop() {
        await stopChild(client, 2000);
        await stopChild(server, 2000);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await stopChild(client).catch(() => {});
    await stopChild(server).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
