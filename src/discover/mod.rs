//! Finding log files: container logs under the two roots, and the node's host files.
//!
//! - Docker json-file: `<docker-root>/<id>/<id>-json.log`
//! - CRI (containerd, CRI-O): `<pods-root>/<ns>_<pod>_<uid>/<container>/<n>.log`
//! - host files: `[node] files`, paths or globs on the file name (`/var/log/*.log`).
//!   A host file that is a container's log too (`/var/log/containers/*.log` links to
//!   the pod logs) is read once, as the container's. A match that is a rotation of
//!   another match (`syslog.1`, `kubelet.log-20240708`) is that file's sibling, not a
//!   source of its own.
//!
//! A scan is the source of truth; [`Waker`] (inotify through `notify`) only makes the
//! next poll happen sooner, because inotify drops events under load and on some
//! filesystems. On Docker nodes the CRI paths are symlinks to Docker's files: a scan
//! returns each file once, keyed by the target's (dev, inode), with both paths' facts.
//! Rotated siblings (`-json.log.1`, `0.log.<timestamp>`) are not sources of their own
//! (the tail reads them: [`crate::tail::rotated_siblings`]); `.gz` and `.tmp` files are
//! never matched.

use crate::enrich::SourceInfo;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The directories to scan.
#[derive(Debug, Clone)]
pub struct Roots {
    pub docker: PathBuf,
    pub pods: PathBuf,
    /// Host file patterns (`[node] files`), under `host_root`.
    pub host: Vec<String>,
    /// Where the node's filesystem is seen (`[node] root`): host files' paths are
    /// reported as the node has them, without it.
    pub host_root: PathBuf,
}

/// One log file found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The path the file is read from and reported as (the Docker path when both exist).
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// What the path(s) say about the container.
    pub info: SourceInfo,
    /// Docker container directory, for `config.v2.json`.
    pub docker_dir: Option<PathBuf>,
}

/// What a scan saw, besides the candidates.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Roots that do not exist or cannot be read (a warning, not an error).
    pub missing_roots: Vec<PathBuf>,
    /// Paths that matched a layout but could not be stat'ed or read.
    pub errors: Vec<(PathBuf, String)>,
    /// Roots that exist but hold no file of their layout.
    pub empty_roots: Vec<PathBuf>,
    /// Host file patterns that match no file.
    pub empty_globs: Vec<PathBuf>,
}

/// How long a root may exist and hold no log file before a warning says so.
pub const EMPTY_ROOT_WARNING: std::time::Duration = std::time::Duration::from_secs(60);

/// Roots that exist but have held no log file since a while: a mistyped root, or one of
/// the wrong layout (`/var/log/containers`, which holds links named after pods, where
/// the CRI root `/var/log/pods` is wanted). Each is reported once per stretch.
#[derive(Debug, Default)]
pub struct EmptyRoots {
    since: HashMap<PathBuf, std::time::Instant>,
    warned: std::collections::HashSet<PathBuf>,
}

impl EmptyRoots {
    /// Takes a scan's empty roots at `now`; returns those empty for
    /// [`EMPTY_ROOT_WARNING`] and not reported yet.
    pub fn observe(&mut self, empty: &[PathBuf], now: std::time::Instant) -> Vec<PathBuf> {
        self.since.retain(|root, _| empty.contains(root));
        self.warned.retain(|root| empty.contains(root));
        let mut due = Vec::new();
        for root in empty {
            let since = *self.since.entry(root.clone()).or_insert(now);
            if now.duration_since(since) >= EMPTY_ROOT_WARNING && self.warned.insert(root.clone()) {
                due.push(root.clone());
            }
        }
        due
    }
}

/// Scans both roots; the result is sorted by path and has one entry per file.
pub fn scan(roots: &Roots) -> (Vec<Candidate>, ScanReport) {
    let mut report = ScanReport::default();
    let mut by_inode: HashMap<(u64, u64), Candidate> = HashMap::new();
    let mut add = |c: Candidate| match by_inode.get_mut(&(c.dev, c.ino)) {
        Some(existing) => {
            // Same file through a second path: keep the first path, merge the facts (the
            // CRI path names the pod; the Docker path names the container).
            existing.info.merge(c.info);
            if existing.docker_dir.is_none() {
                existing.docker_dir = c.docker_dir;
            }
        }
        None => {
            by_inode.insert((c.dev, c.ino), c);
        }
    };
    // A file is read only where it really is under a root, or where it is a Docker
    // container log (`<id>/<id>-json.log`, which the CRI paths link to on Docker nodes,
    // under a Docker data root that may be elsewhere): a symlink that leads anywhere else
    // (`0.log -> /etc/shadow`) is reported and skipped.
    let inside: Vec<PathBuf> = [&roots.docker, &roots.pods]
        .into_iter()
        .filter_map(|r| fs::canonicalize(r).ok())
        .collect();
    let mut add = |c: Candidate, report: &mut ScanReport| match fs::canonicalize(&c.path) {
        Ok(real) if c.docker_dir.is_some() || inside.iter().any(|r| real.starts_with(r)) => add(c),
        Ok(real) => report.errors.push((
            c.path,
            format!(
                "leads outside the log roots, to {}; not read",
                real.display()
            ),
        )),
        Err(e) => report.errors.push((c.path, e.to_string())),
    };
    let mut counted = |c: Candidate, report: &mut ScanReport, n: &mut usize| {
        *n += 1;
        add(c, report);
    };
    let (mut docker, mut pods) = (0, 0);
    scan_docker(
        &roots.docker,
        &mut |c, r| counted(c, r, &mut docker),
        &mut report,
    );
    scan_pods(
        &roots.pods,
        &mut |c, r| counted(c, r, &mut pods),
        &mut report,
    );
    for (root, n) in [(&roots.docker, docker), (&roots.pods, pods)] {
        if n == 0 && !report.missing_roots.contains(root) {
            report.empty_roots.push(root.clone());
        }
    }
    for pattern in &roots.host {
        let (found, matched) = scan_host(pattern, &inside, &roots.host_root, &mut report);
        if !matched {
            report.empty_globs.push(PathBuf::from(pattern));
        }
        for c in found {
            // A container's log seen through a link (`/var/log/containers`): read once,
            // as the container's.
            by_inode.entry((c.dev, c.ino)).or_insert(c);
        }
    }
    let mut out: Vec<Candidate> = by_inode.into_values().collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    (out, report)
}

/// The files one host pattern matches (a path, or a glob on the file name), without
/// the matches that are rotations of another match or container logs; and whether it
/// matched any file at all.
fn scan_host(
    pattern: &str,
    container_roots: &[PathBuf],
    root: &Path,
    report: &mut ScanReport,
) -> (Vec<Candidate>, bool) {
    let path = Path::new(pattern);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return (Vec::new(), false);
    };
    let names: Vec<(String, PathBuf)> = if name.contains(['*', '?', '[', '{']) {
        // The configuration was validated: the glob compiles.
        let Ok(glob) = globset::Glob::new(name).map(|g| g.compile_matcher()) else {
            return (Vec::new(), false);
        };
        let mut quiet = ScanReport::default();
        read_dir_sorted(dir, &mut quiet, false)
            .into_iter()
            .filter(|(n, _)| glob.is_match(n) && !crate::tail::is_ignored(n))
            .collect()
    } else {
        vec![(name.to_owned(), path.to_owned())]
    };
    let rotation = |n: &str| {
        names
            .iter()
            .any(|(other, _)| crate::tail::is_rotation_of(n, other))
    };
    let mut out = Vec::new();
    let mut matched = false;
    for (n, p) in &names {
        // A link into a container root is that container's log (read from there when
        // the root is scanned, never twice and never as a host file).
        let aliased = fs::canonicalize(p)
            .is_ok_and(|real| container_roots.iter().any(|r| real.starts_with(r)));
        if rotation(n) {
            continue;
        }
        if aliased {
            matched = true;
            continue;
        }
        if let Some(m) = stat_file(p, report) {
            matched = true;
            out.push(Candidate {
                path: p.clone(),
                dev: m.dev(),
                ino: m.ino(),
                // As the node has it: the identity and the `path` field do not depend
                // on where the node's filesystem is mounted.
                info: SourceInfo::host(&Path::new("/").join(p.strip_prefix(root).unwrap_or(p))),
                docker_dir: None,
            });
        }
    }
    (out, matched)
}

fn read_dir_sorted(dir: &Path, report: &mut ScanReport, is_root: bool) -> Vec<(String, PathBuf)> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            if is_root {
                report.missing_roots.push(dir.to_owned());
            } else if e.kind() != std::io::ErrorKind::NotFound {
                report.errors.push((dir.to_owned(), e.to_string()));
            }
            return Vec::new();
        }
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    out.sort();
    out
}

fn stat_file(path: &Path, report: &mut ScanReport) -> Option<fs::Metadata> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Some(m),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            report.errors.push((path.to_owned(), e.to_string()));
            None
        }
    }
}

fn scan_docker(
    root: &Path,
    add: &mut impl FnMut(Candidate, &mut ScanReport),
    report: &mut ScanReport,
) {
    for (id, dir) in read_dir_sorted(root, report, true) {
        if !dir.is_dir() {
            continue;
        }
        let path = dir.join(format!("{id}-json.log"));
        if let Some(m) = stat_file(&path, report) {
            add(
                Candidate {
                    path,
                    dev: m.dev(),
                    ino: m.ino(),
                    info: SourceInfo::from_docker_id(&id),
                    docker_dir: Some(dir),
                },
                report,
            );
        }
    }
}

fn scan_pods(
    root: &Path,
    add: &mut impl FnMut(Candidate, &mut ScanReport),
    report: &mut ScanReport,
) {
    for (pod_name, pod_dir) in read_dir_sorted(root, report, true) {
        if !pod_dir.is_dir() {
            continue;
        }
        for (container_name, container_dir) in read_dir_sorted(&pod_dir, report, false) {
            if !container_dir.is_dir() {
                continue;
            }
            for (name, path) in read_dir_sorted(&container_dir, report, false) {
                if !is_cri_log_name(&name) {
                    continue;
                }
                if let Some(m) = stat_file(&path, report) {
                    let mut info = SourceInfo::from_cri_dirs(&pod_name, &container_name);
                    // A symlink into Docker's tree names the container too.
                    let docker_dir = docker_target(&path)
                        .inspect(|(id, _)| info.container_id = Some(id.clone()));
                    add(
                        Candidate {
                            path,
                            dev: m.dev(),
                            ino: m.ino(),
                            info,
                            docker_dir: docker_dir.map(|(_, d)| d),
                        },
                        report,
                    );
                }
            }
        }
    }
}

/// `<n>.log` with `n` a restart count.
fn is_cri_log_name(name: &str) -> bool {
    name.strip_suffix(".log")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// If `path` is a symlink to `<dir>/<id>/<id>-json.log`, that id and directory.
fn docker_target(path: &Path) -> Option<(String, PathBuf)> {
    let target = fs::canonicalize(path).ok()?;
    let name = target.file_name()?.to_str()?;
    let id = name.strip_suffix("-json.log")?;
    let dir = target.parent()?;
    (dir.file_name()?.to_str()? == id).then(|| (id.to_owned(), dir.to_owned()))
}

/// Wakes the read loop when something changes under a root. Holds the watcher alive.
pub struct Waker {
    _watcher: Option<notify::RecommendedWatcher>,
    pub rx: crossbeam_channel::Receiver<()>,
    pub errors: Vec<String>,
}

impl Waker {
    /// Watches the roots that exist; a root that cannot be watched is reported and left
    /// to the periodic rescan.
    pub fn new(roots: &Roots) -> Waker {
        use notify::Watcher;
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut errors = Vec::new();
        // Host files' directories are watched for the configured files only (`/var/log`
        // is written to all the time by other programs).
        let host: Vec<(PathBuf, globset::GlobMatcher)> = roots
            .host
            .iter()
            .filter_map(|p| {
                let p = Path::new(p);
                let name = p.file_name()?.to_string_lossy().into_owned();
                let glob = globset::Glob::new(&name).ok()?.compile_matcher();
                Some((p.parent()?.to_owned(), glob))
            })
            .collect();
        let unrelated = move |path: &Path| {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                return false;
            };
            let name = name.to_string_lossy();
            let ours = host.iter().filter(|(d, _)| d == dir).any(|(_, g)| {
                // The file, or a rotation of it (`kubelet.log.1`: a rename to watch).
                g.is_match(&*name)
                    || name.match_indices(['.', '-']).any(|(i, _)| {
                        g.is_match(&name[..i]) && crate::tail::is_rotation_of(&name, &name[..i])
                    })
            });
            host.iter().any(|(d, _)| d == dir) && !ours
        };
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Our own reads raise access events: waking on them would spin the loop.
            if let Ok(ev) = &res {
                if matches!(ev.kind, notify::EventKind::Access(_)) {
                    return;
                }
                if !ev.paths.is_empty() && ev.paths.iter().all(|p| unrelated(p)) {
                    return;
                }
            }
            let _ = tx.send(());
        });
        let watcher = match watcher {
            Ok(mut w) => {
                for root in [&roots.docker, &roots.pods] {
                    if root.is_dir() {
                        if let Err(e) = w.watch(root, notify::RecursiveMode::Recursive) {
                            errors.push(format!("watching {}: {e}", root.display()));
                        }
                    }
                }
                // Host files' directories, not what is below them (`/var/log` holds
                // the pod logs too, watched above).
                let mut dirs: Vec<&Path> = roots
                    .host
                    .iter()
                    .filter_map(|p| Path::new(p).parent())
                    .collect();
                dirs.sort();
                dirs.dedup();
                for dir in dirs.into_iter().filter(|d| d.is_dir()) {
                    if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                        errors.push(format!("watching {}: {e}", dir.display()));
                    }
                }
                Some(w)
            }
            Err(e) => {
                errors.push(format!("file watcher unavailable: {e}"));
                None
            }
        };
        Waker {
            _watcher: watcher,
            rx,
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn host_files_by_path_and_glob_without_rotations_or_container_aliases() -> std::io::Result<()> {
        let t = tempfile::tempdir()?;
        let node = t.path().join("node");
        let log = node.join("var/log");
        let pods = node.join("var/log/pods");
        let c = pods.join("shop_web_uid1/nginx");
        fs::create_dir_all(&c)?;
        fs::write(c.join("0.log"), b"2024-07-08T03:42:57Z stdout F x\n")?;
        fs::create_dir_all(log.join("containers"))?;
        symlink(c.join("0.log"), log.join("containers/web_shop_nginx-1.log"))?;
        for name in [
            "kubelet.log",
            "kubelet.log.1",
            "kubelet.log-20240708",
            "kubelet.log.2.gz",
            "app.log",
            "app.log.1",
            "other.txt",
        ] {
            fs::write(log.join(name), b"x\n")?;
        }
        let under = |p: &str| node.join(p.trim_start_matches('/')).display().to_string();
        let (found, report) = scan(&Roots {
            docker: t.path().join("none"),
            pods: pods.clone(),
            host: [
                "/var/log/kubelet.log",
                "/var/log/*.log",
                "/var/log/containers/*.log",
                "/var/log/absent.log",
            ]
            .map(under)
            .to_vec(),
            host_root: node.clone(),
        });
        let host: Vec<String> = found
            .iter()
            .filter_map(|c| c.info.host_path.clone())
            .collect();
        // As the node has them; rotations are siblings; the link is the pod's log.
        assert_eq!(host, ["/var/log/app.log", "/var/log/kubelet.log"]);
        assert_eq!(found.len(), 3, "the pod log once: {found:?}");
        assert_eq!(
            report.empty_globs,
            [PathBuf::from(under("/var/log/absent.log"))]
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        Ok(())
    }

    #[test]
    fn finds_both_layouts_and_dedupes_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let docker = t.path().join("docker");
        let pods = t.path().join("pods");
        let id = "abc123";
        fs::create_dir_all(docker.join(id)).unwrap();
        fs::write(docker.join(id).join(format!("{id}-json.log")), b"x\n").unwrap();
        fs::write(docker.join(id).join(format!("{id}-json.log.1")), b"x\n").unwrap();
        fs::write(docker.join("manifest.json"), b"{}").unwrap();
        let c = pods.join("shop_web_uid1/nginx");
        fs::create_dir_all(&c).unwrap();
        symlink(
            docker.join(id).join(format!("{id}-json.log")),
            c.join("0.log"),
        )
        .unwrap();
        let c2 = pods.join("pay_api_uid2/api");
        fs::create_dir_all(&c2).unwrap();
        for name in [
            "0.log",
            "1.log",
            "0.log.20240708-034200",
            "0.log.20240708.gz",
            "2.log.tmp",
            "x.log",
        ] {
            fs::write(c2.join(name), b"2024-07-08T03:42:57Z stdout F x\n").unwrap();
        }
        let (found, report) = scan(&Roots {
            host: Vec::new(),
            host_root: PathBuf::from("/"),
            docker: docker.clone(),
            pods: pods.clone(),
        });
        assert!(
            report.missing_roots.is_empty() && report.errors.is_empty(),
            "{report:?}"
        );
        let paths: Vec<_> = found
            .iter()
            .map(|c| c.path.strip_prefix(t.path()).unwrap().to_owned())
            .collect();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("docker/abc123/abc123-json.log"),
                PathBuf::from("pods/pay_api_uid2/api/0.log"),
                PathBuf::from("pods/pay_api_uid2/api/1.log"),
            ]
        );
        let d = &found[0];
        assert_eq!(d.info.container_id.as_deref(), Some(id));
        assert_eq!(d.info.namespace.as_deref(), Some("shop"));
        assert_eq!(d.info.pod.as_deref(), Some("web"));
        assert_eq!(
            crate::tail::rotated_siblings(&c2.join("0.log")),
            vec![c2.join("0.log.20240708-034200")]
        );
    }

    /// A root that exists but holds no file of its layout (here `/var/log/containers`
    /// style links given as the pods root) is reported after a while, once.
    #[test]
    fn an_empty_root_is_reported_after_a_while_once() {
        let t = tempfile::tempdir().unwrap();
        let docker = t.path().join("docker");
        fs::create_dir_all(docker.join("abc")).unwrap();
        fs::write(docker.join("abc/abc-json.log"), b"x\n").unwrap();
        let containers = t.path().join("containers");
        fs::create_dir_all(&containers).unwrap();
        fs::write(containers.join("pod_ns_app-abc.log"), b"x\n").unwrap();
        let (found, report) = scan(&Roots {
            host: Vec::new(),
            host_root: PathBuf::from("/"),
            docker: docker.clone(),
            pods: containers.clone(),
        });
        assert_eq!(found.len(), 1);
        assert_eq!(report.empty_roots, std::slice::from_ref(&containers));

        let mut e = EmptyRoots::default();
        let t0 = std::time::Instant::now();
        let empty = [containers.clone()];
        assert!(e.observe(&empty, t0).is_empty());
        assert!(e.observe(&empty, t0 + EMPTY_ROOT_WARNING / 2).is_empty());
        assert_eq!(e.observe(&empty, t0 + EMPTY_ROOT_WARNING), empty);
        assert!(
            e.observe(&empty, t0 + EMPTY_ROOT_WARNING * 2).is_empty(),
            "once"
        );
        // Files appear, then go: a new stretch.
        let later = t0 + EMPTY_ROOT_WARNING * 3;
        assert!(e.observe(&[], later).is_empty());
        assert!(e.observe(&empty, later).is_empty());
        assert_eq!(e.observe(&empty, later + EMPTY_ROOT_WARNING), empty);
    }

    #[test]
    fn missing_roots_are_reported_not_fatal() {
        let t = tempfile::tempdir().unwrap();
        let (found, report) = scan(&Roots {
            host: Vec::new(),
            host_root: PathBuf::from("/"),
            docker: t.path().join("nope"),
            pods: t.path().join("nada"),
        });
        assert!(found.is_empty());
        assert_eq!(report.missing_roots.len(), 2);
    }

    #[test]
    fn a_symlink_leading_outside_the_roots_is_reported_and_not_read() {
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("etc/shadow");
        fs::create_dir_all(secret.parent().unwrap()).unwrap();
        fs::write(&secret, b"root:x:0:0\n").unwrap();
        let c = t.path().join("pods/ns_pod_uid/c");
        fs::create_dir_all(&c).unwrap();
        symlink(&secret, c.join("0.log")).unwrap();
        fs::write(c.join("1.log"), b"fine\n").unwrap();
        // A directory link counts too.
        let evil = t.path().join("pods/ns_evil_uid");
        symlink(t.path().join("etc"), &evil).unwrap();
        let (found, report) = scan(&Roots {
            host: Vec::new(),
            host_root: PathBuf::from("/"),
            docker: t.path().join("none"),
            pods: t.path().join("pods"),
        });
        let paths: Vec<&Path> = found.iter().map(|c| c.path.as_path()).collect();
        assert_eq!(paths, [c.join("1.log").as_path()]);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert!(report.errors[0].1.contains("outside the log roots"));
    }

    #[test]
    fn symlink_only_still_names_the_container() {
        let t = tempfile::tempdir().unwrap();
        let id = "feed";
        let real = t.path().join("elsewhere").join(id);
        fs::create_dir_all(&real).unwrap();
        fs::write(real.join(format!("{id}-json.log")), b"x\n").unwrap();
        let c = t.path().join("pods/ns_pod_uid/c");
        fs::create_dir_all(&c).unwrap();
        symlink(real.join(format!("{id}-json.log")), c.join("0.log")).unwrap();
        let (found, _) = scan(&Roots {
            host: Vec::new(),
            host_root: PathBuf::from("/"),
            docker: t.path().join("none"),
            pods: t.path().join("pods"),
        });
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].info.container_id.as_deref(), Some(id));
        assert_eq!(found[0].info.source_key(), format!("docker:{id}"));
    }
}
