//! A `tracing` subscriber that counts events at WARN and above and keeps their text, installed
//! for the current thread until the guard drops.
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The WARN and ERROR events seen so far, each as "field=value ...".
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    pub fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

struct Collect(Captured);

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl<S: tracing::Subscriber> Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            let mut text = Text(String::new());
            event.record(&mut text);
            (self.0).0.lock().unwrap().push(text.0);
        }
    }
}

/// Captures events on this thread until the guard drops.
///
/// `tracing` caches whether a callsite is wanted, process-wide, the first time any thread
/// reaches it; with one subscriber registered it asks only the reaching thread's. A test
/// thread with no subscriber would then cache "never" for an event another test is waiting
/// for, and the capture would miss it. So every thread gets a silent global subscriber (the
/// capture is a second one, and callsites are asked of both), and the cache is rebuilt once
/// the capture is installed.
pub fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    static SILENT: std::sync::Once = std::sync::Once::new();
    SILENT.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(Collect(captured.clone()));
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    (captured, guard)
}
