//! Taskflow's desktop app, its Rust side: a thin layer of Tauri commands and events over
//! client-core, which keeps the board replicas on the device, syncs them and signs in. The UI
//! (TypeScript, `ui/`) calls the commands and listens to the events.
//!
//! - [`app`]: the app's state and what each command does; runtime-agnostic ([`app::Ui`]).
//! - [`commands`]: the `#[tauri::command]`s.
//! - [`view`]: the JSON the UI is sent.

pub mod app;
pub mod commands;
pub mod view;

use std::sync::Arc;

use tauri::{Emitter, Manager, Runtime};
use tauri_plugin_notification::NotificationExt;

pub use app::{App, AppError, Ui};

/// The commands, for [`tauri::Builder::invoke_handler`] (the app's and the tests').
pub fn with_commands<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder.invoke_handler(tauri::generate_handler![
        commands::session,
        commands::sign_in,
        commands::sign_out,
        commands::workspaces,
        commands::members,
        commands::boards,
        commands::open_board,
        commands::board,
        commands::status,
        commands::viewers,
        commands::set_viewing,
        commands::add_card,
        commands::update_card,
        commands::move_card,
        commands::archive_card,
        commands::add_comment,
        commands::notifications,
        commands::mark_read,
    ])
}

/// The window, as the app talks to it.
struct Window<R: Runtime>(tauri::AppHandle<R>);

impl<R: Runtime> Ui for Window<R> {
    fn emit(&self, event: &str, payload: serde_json::Value) {
        if let Err(e) = self.0.emit(event, payload) {
            tracing::warn!(event, error = %e, "telling the window failed");
        }
    }

    fn notify(&self, title: &str, body: &str) {
        let shown = self
            .0
            .notification()
            .builder()
            .title(title)
            .body(body)
            .show();
        if let Err(e) = shown {
            tracing::warn!(error = %e, "a desktop notification failed");
        }
    }
}

/// Runs the app.
pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TASKFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let builder = tauri::Builder::default()
        .plugin(tauri_plugin_notification::init())
        .setup(|app| {
            // TASKFLOW_DESKTOP_DATA lets tests and second instances keep their own data.
            let data_dir = match std::env::var_os("TASKFLOW_DESKTOP_DATA") {
                Some(dir) => dir.into(),
                None => app.path().app_data_dir()?,
            };
            std::fs::create_dir_all(&data_dir)?;
            let ui = Arc::new(Window(app.handle().clone()));
            app.manage(App::new(data_dir, ui));
            Ok(())
        });
    let app = with_commands(builder)
        .build(tauri::generate_context!())
        .unwrap_or_else(|e| {
            eprintln!("taskflow-desktop: {e}");
            std::process::exit(1);
        });
    app.run(|handle, event| {
        if let tauri::RunEvent::ExitRequested { .. } = event {
            let state = handle.state::<App>();
            tauri::async_runtime::block_on(state.shutdown());
        }
    });
}
