//! Signals, through `signal-hook`: the first SIGTERM or SIGINT cancels the root shutdown
//! token (stop leasing, drain, release, exit 0); a second one exits at once.

use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio_util::sync::CancellationToken;

/// Exit code when a second signal cuts the graceful shutdown short.
pub const EXIT_FORCED: i32 = 130;

/// Starts listening; returns the root shutdown token.
///
/// # Errors
/// The signal handlers cannot be installed.
pub fn install() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let root = token.clone();
    tokio::spawn(async move {
        if let Some(sig) = signals.next().await {
            tracing::info!(signal = sig, "shutdown requested; a second signal stops at once");
            root.cancel();
        }
        if let Some(sig) = signals.next().await {
            tracing::warn!(signal = sig, "second signal: exiting now; held jobs return when their leases expire");
            std::process::exit(EXIT_FORCED);
        }
    });
    Ok(token)
}
