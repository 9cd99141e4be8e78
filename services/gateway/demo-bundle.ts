import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * Builds the demo page (services/gateway/demo/) into one self-contained HTML file: the
 * TypeScript bundled and minified by esbuild, the style sheet and the script inlined in
 * page.html. `npm run build` writes it next to the compiled gateway
 * (`node dist/services/gateway/demo-bundle.js <source dir> <out file>`); a gateway run from
 * source builds it in memory at startup (demo-page.ts).
 */
export async function bundleDemoPage(sourceDir: string): Promise<string> {
  // esbuild is only needed to build the page, not to serve a built one.
  const { build } = await import('esbuild');
  const result = await build({
    entryPoints: [join(sourceDir, 'app.ts')],
    tsconfig: join(sourceDir, 'tsconfig.json'),
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    logLevel: 'silent',
  });
  const script = result.outputFiles[0]?.text;
  if (script === undefined) throw new Error('esbuild produced no output for the demo page');
  const [page, style] = await Promise.all([
    readFile(join(sourceDir, 'page.html'), 'utf8'),
    readFile(join(sourceDir, 'style.css'), 'utf8'),
  ]);
  // Replacer functions: the script may contain `$&`-like sequences that replace() would expand.
  return page.replace('/*STYLE*/', () => style).replace('/*SCRIPT*/', () => script);
}

async function main(sourceDir: string, outFile: string): Promise<void> {
  const html = await bundleDemoPage(sourceDir);
  await mkdir(dirname(outFile), { recursive: true });
  await writeFile(outFile, html);
  console.log(`demo page: ${outFile} (${html.length} bytes)`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [sourceDir, outFile] = process.argv.slice(2);
  if (!sourceDir || !outFile) {
    console.error('usage: demo-bundle <source dir> <out file>');
    process.exit(2);
  }
  main(sourceDir, outFile).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
