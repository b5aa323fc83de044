//! Tauri's build step. The UI (`ui/dist`, built by Vite) is embedded in the binary, so it must
//! exist first: scripts/desktop-ui.sh builds it (scripts/services.sh runs that).

fn main() {
    let dist = std::path::Path::new("ui/dist/index.html");
    println!("cargo:rerun-if-changed=ui/dist");
    if !dist.exists() {
        panic!(
            "desktop/ui/dist is missing: build the UI first with scripts/desktop-ui.sh \
             (scripts/services.sh runs it)"
        );
    }
    tauri_build::build();
}
