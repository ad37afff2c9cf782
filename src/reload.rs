//! Live reload: what changes without a restart, and when. SIGHUP, or a change in the
//! directory of the configuration file or of a credential file (ConfigMap and Secret
//! volumes are updated in place through a symlink swap), loads the configuration again
//! from the same file, environment and flags.
//!
//! - A configuration that does not load or validate is refused: logged with its error,
//!   counted, and the agent keeps running on the one it has.
//! - Rules (selection, filters, parsers, rate limits), `[redact]`, `[multiline]` and the
//!   field parsers (`fields.parser`, `fields.patterns`) go to the reader, which applies
//!   them file by file: exclusion and limits at once, record shaping where no group is
//!   open (so a group's boundaries never depend on when a reload came).
//! - Routing (rules' `index`, `elasticsearch.index_route`) goes to the reader too, once
//!   the shipper has installed the index template for the new patterns (or a while
//!   passed): a file's new route applies from its length at that moment.
//! - Credential files (`password_file`, `api_key_file`) are read again; the next request
//!   carries the new credentials.
//! - Anything else (roots, the node's files and journal, data directory, listener, buffer,
//!   Elasticsearch endpoints...) takes effect at the next start: the log says which
//!   sections changed.

use crate::config::{self, Config};
use crate::metrics::Stats;
use crate::reader::ReaderSettings;
use crate::ship::client::Credentials;
use crate::ship::TemplatePatterns;
use crossbeam_channel::{Receiver, Sender};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Where the configuration came from, to load it again the same way.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub flags: Vec<(&'static str, toml::Value)>,
}

impl Source {
    fn load(&self) -> Result<Config, config::ConfigError> {
        config::load(
            self.file.as_deref(),
            self.env.iter().cloned(),
            self.flags.clone(),
        )
    }
}

/// Why a reload was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChange,
}

/// The reloader's handles: where triggers go, and the thread.
pub struct Reloader {
    pub trigger: Sender<Trigger>,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// Starts watching; reloads run on their own thread until `stopped` disconnects (see
/// [`crate::shutdown::Stop::wake_on_stop`]).
pub fn start(
    source: Source,
    current: Config,
    reader: Sender<ReaderSettings>,
    (credentials, patterns): (Arc<Credentials>, Arc<TemplatePatterns>),
    stats: Arc<Stats>,
    stopped: Receiver<()>,
) -> anyhow::Result<Reloader> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let watcher = watch(&source, &current, tx.clone());
    let state = State {
        source,
        current,
        reader,
        credentials,
        patterns,
        stats,
    };
    std::thread::Builder::new()
        .name("shipper-reload".into())
        .spawn(move || state.run(&rx, &stopped))?;
    Ok(Reloader {
        trigger: tx,
        _watcher: watcher,
    })
}

/// Watches the directories of the configuration file and of the credential files.
fn watch(source: &Source, cfg: &Config, tx: Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let es = &cfg.elasticsearch;
    let dirs: Vec<PathBuf> = [
        source.file.as_ref(),
        es.password_file.as_ref(),
        es.api_key_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|f| f.parent().map(|p| p.to_path_buf()))
    .map(|p| {
        if p.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            p
        }
    })
    .collect();
    if dirs.is_empty() {
        return None;
    }
    let mut w = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(Trigger::FileChange);
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration for changes; reload with SIGHUP");
            return None;
        }
    };
    for d in dirs {
        if let Err(e) = w.watch(&d, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch for configuration changes; reload with SIGHUP");
        }
    }
    Some(w)
}

struct State {
    source: Source,
    current: Config,
    reader: Sender<ReaderSettings>,
    credentials: Arc<Credentials>,
    patterns: Arc<TemplatePatterns>,
    stats: Arc<Stats>,
}

/// How long a reload that routes to new indices waits for the index template to cover
/// them before the reader takes the new routes anyway.
const TEMPLATE_WAIT: Duration = Duration::from_secs(10);

/// How long a burst of file events is gathered into one reload (a symlink swap is
/// several events).
const SETTLE: Duration = Duration::from_millis(50);

impl State {
    /// Waits for triggers (nothing else wakes it) until the agent stops.
    fn run(mut self, rx: &Receiver<Trigger>, stopped: &Receiver<()>) {
        loop {
            let first = crossbeam_channel::select! {
                recv(rx) -> t => match t {
                    Ok(t) => t,
                    Err(_) => return,
                },
                recv(stopped) -> _ => return,
            };
            let mut signal = first == Trigger::Signal;
            while let Ok(t) = rx.recv_timeout(SETTLE) {
                signal |= t == Trigger::Signal;
            }
            self.reload(signal);
        }
    }

    /// Loads the configuration again and applies what can change now.
    fn reload(&mut self, signal: bool) {
        let new = match self.source.load() {
            Ok(c) => c,
            Err(e) => return self.refuse(&e.to_string()),
        };
        // The credential files are read again; the rest of `[elasticsearch]` (the
        // endpoints, inline credentials) waits for the next start.
        match self.credentials.reload(&self.current.elasticsearch) {
            Ok(true) => tracing::info!("credentials read again from their files"),
            Ok(false) => {}
            Err(e) => return self.refuse(&e.to_string()),
        }
        if new == self.current {
            if signal {
                tracing::info!("configuration reloaded: nothing changed");
                Stats::add(&self.stats.config_reloads, 1);
            }
            // A file put back as it was after a refused edit is good again.
            self.stats
                .config_reload_failed
                .store(false, Ordering::Relaxed);
            return;
        }
        let restart = needs_restart(&self.current, &new);
        if !restart.is_empty() {
            tracing::warn!(sections = %restart.join(", "), "these settings changed but take effect only at the next start");
        }
        if reloadable_changed(&self.current, &new) {
            let settings = match ReaderSettings::from_config(&new) {
                Ok(s) => s,
                Err(e) => return self.refuse(&e.to_string()),
            };
            let gen = self.patterns.add(new.index_patterns());
            if !self.patterns.wait_installed(gen, TEMPLATE_WAIT) {
                tracing::warn!("the index template for the new routes is not installed yet (Elasticsearch unreachable?); routing anyway, the template follows");
            }
            if self.reader.send(settings).is_err() {
                return;
            }
        }
        tracing::info!("configuration reloaded");
        Stats::add(&self.stats.config_reloads, 1);
        self.stats
            .config_reload_failed
            .store(false, Ordering::Relaxed);
        self.current = new;
    }

    fn refuse(&self, error: &str) {
        tracing::error!(%error, "new configuration refused; still running on the previous one");
        Stats::add(&self.stats.config_reload_failures, 1);
        self.stats
            .config_reload_failed
            .store(true, Ordering::Relaxed);
    }
}

/// Whether the settings a reload applies differ between `a` and `b`.
fn reloadable_changed(a: &Config, b: &Config) -> bool {
    a.rules != b.rules
        || a.elasticsearch.index_route != b.elasticsearch.index_route
        || a.redact != b.redact
        || a.multiline != b.multiline
        || a.fields.parser != b.fields.parser
        || a.fields.patterns != b.fields.patterns
}

/// The sections whose changes wait for the next start.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut fields = (old.fields.clone(), new.fields.clone());
    for f in [&mut fields.0, &mut fields.1] {
        f.parser.clear();
        f.patterns.clear();
    }
    let mut es = (old.elasticsearch.clone(), new.elasticsearch.clone());
    es.1.index_route.clone_from(&es.0.index_route);
    [
        ("input", old.input != new.input),
        ("agent", old.agent != new.agent),
        ("elasticsearch", es.0 != es.1),
        ("buffer", old.buffer != new.buffer),
        ("kubernetes", old.kubernetes != new.kubernetes),
        ("metrics", old.metrics != new.metrics),
        ("fields", fields.0 != fields.1),
        ("node", old.node != new.node),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| name)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_cannot_change_live_asks_for_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.rules.push(config::Rule {
            exclude: Some(true),
            ..config::Rule::default()
        });
        new.redact.enabled = false;
        new.multiline.mode = "java".into();
        new.fields.parser = "logfmt".into();
        assert!(needs_restart(&old, &new).is_empty());
        assert!(reloadable_changed(&old, &new));
        new.input.read_bytes *= 2;
        new.fields.target = "app".into();
        new.elasticsearch.urls = vec!["http://other:9200".into()];
        new.node.journal = false;
        assert_eq!(
            needs_restart(&old, &new),
            ["input", "elasticsearch", "fields", "node"]
        );
    }
}
