import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The built console is committed under the gateway, which serves it at `/`, so that
// `make run` needs no Node.js. `make console` rebuilds it.
export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "../services/gateway/console_dist",
    emptyOutDir: true,
    chunkSizeWarningLimit: 2000,
  },
  server: {
    proxy: { "/api": "http://127.0.0.1:8080", "/ws": { target: "ws://127.0.0.1:8080", ws: true } },
  },
});
