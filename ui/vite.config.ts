// Build, dev-server and unit-test configuration of the Hark web UI.
import { defineConfig } from 'vitest/config';
import { svelte } from '@sveltejs/vite-plugin-svelte';

export default defineConfig({
  plugins: [svelte()],
  // Tauri shows Rust's own output in the same terminal during `tauri dev`.
  clearScreen: false,
  server: { port: 1420, strictPort: true, host: '127.0.0.1' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // WebKitGTK 2.4x/2.50 on Linux, WebView2 on Windows, WKWebView on macOS.
    target: ['es2022', 'safari16'],
    // One small app: keep asset names stable so the Tauri bundle diff stays small.
    assetsInlineLimit: 0,
  },
  // Stores use runes; compiling them for the browser (not SSR) keeps the test runtime the same as
  // the app's.
  resolve: process.env.VITEST ? { conditions: ['browser'] } : undefined,
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
