import { defineConfig } from "vite";

// The Tauri window loads the dev server in development (tauri.conf.json: devUrl).
export default defineConfig({
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  build: { target: "es2022", outDir: "dist", emptyOutDir: true },
});
