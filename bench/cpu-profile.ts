// Preloaded with NODE_OPTIONS="--import <this file>" by `npm run bench -- --profile <dir>`
// (Node 20 refuses --cpu-prof in NODE_OPTIONS): records a V8 CPU profile of the main thread
// and writes it to $CPU_PROFILE_DIR/<entry>-<pid>.cpuprofile when the process is told to stop
// (SIGTERM, SIGINT) or exits. The roles end by re-raising the signal (shared/lifecycle.ts),
// which emits no 'exit' event: the signal itself is the moment to write.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { basename, dirname } from 'node:path';

const dir = process.env.CPU_PROFILE_DIR;
if (dir) {
  const entry = process.argv[1] ?? 'node';
  const name = `${basename(dirname(entry))}-${basename(entry).replace(/\.[^.]+$/, '')}`;
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 500 });
  session.post('Profiler.start');
  let written = false;
  // The inspector answers in-process commands synchronously, so this completes before the
  // process goes on to stop.
  const write = () => {
    if (written) return;
    written = true;
    session.post('Profiler.stop', (err, result) => {
      if (!err)
        writeFileSync(`${dir}/${name}-${process.pid}.cpuprofile`, JSON.stringify(result.profile));
    });
  };
  process.once('exit', write);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.prependOnceListener(signal, write);
}
