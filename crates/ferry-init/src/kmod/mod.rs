//! Kernel modules without udev: "coldplug" by modalias.
//!
//! Every device the kernel has enumerated exposes `/sys/devices/**/modalias` (e.g.
//! `pci:v00001AF4d00001000sv…`). Each is matched against the glob patterns of `modules.alias`
//! ([`glob`]); every matching module is loaded after its `modules.softdep` `pre:` modules and its
//! `modules.dep` dependencies, with `finit_module(2)` (already loaded = fine). Loading a bus driver
//! makes new devices appear (virtio_pci → the virtio devices → virtio_net), so this repeats in
//! rounds until a round finds no new modalias, bounded by a round count and a timeout. A fixed list
//! of modules that no device asks for (filesystems, device-mapper, disk class drivers) is loaded too.
//!
//! Seams (STYLE 10): the sysfs root and module directory are paths, and loading goes through the
//! [`Loader`] trait, so tests run on a temp dir with a recording loader.
//!
//! Index formats (written by `depmod`, frozen by kmod; image-builder ships them regenerated over the
//! shipped modules only, with plain `.ko` files):
//! - `modules.dep`: `kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko`
//! - `modules.alias`: `alias PATTERN MODULE`
//! - `modules.softdep`: `softdep MODULE pre: A B post: C`

pub mod glob;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// Modules loaded at every boot, if the image ships them, right after coldplug: nothing in /sys
/// asks for these (disk class driver, device-mapper, efivarfs before its mount), or a boot disk
/// must not wait for a later modalias round (virtio_blk).
pub const ALWAYS_LOAD: &[&str] = &["sd_mod", "virtio_blk", "dm_mod", "efivarfs"];

/// Filesystems the restore and fix-up mount, loaded in the background while the agent starts:
/// they are large (under QEMU/TCG xfs alone takes 4 s to load) and needed only minutes later. A
/// mount before they are loaded still works: the kernel requests the module (busybox modprobe).
pub const LATE_LOAD: &[&str] = &[
    "ext4",
    "xfs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "ntfs3",
];

/// `xen-blkfront` → `xen_blkfront` (the kernel treats both the same).
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

#[derive(Debug, Clone)]
struct Module {
    /// Path relative to the module directory.
    path: String,
    /// Hard dependencies (names) in modules.dep order: load right to left.
    deps: Vec<String>,
}

#[derive(Debug, Clone)]
struct Alias {
    pattern: String,
    prefix_len: usize,
    module: String,
}

/// The parsed module indexes of one kernel.
#[derive(Debug, Default, Clone)]
pub struct ModIndex {
    modules: HashMap<String, Module>,
    aliases: Vec<Alias>,
    /// name → (pre, post): module names or aliases.
    softdeps: HashMap<String, (Vec<String>, Vec<String>)>,
}

fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    normalise(base)
}

impl ModIndex {
    /// Parses the three index texts; malformed lines are skipped.
    pub fn parse(dep: &str, alias: &str, softdep: &str) -> Self {
        let mut idx = ModIndex::default();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(module_name).collect();
            idx.modules.insert(
                module_name(path),
                Module {
                    path: path.trim().to_string(),
                    deps,
                },
            );
        }
        for line in alias.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) = (w.next(), w.next(), w.next()) {
                let prefix_len = glob::literal_prefix(pattern).len();
                idx.aliases.push(Alias {
                    pattern: pattern.to_string(),
                    prefix_len,
                    module: normalise(module),
                });
            }
        }
        for line in softdep.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(name) = w.next() else { continue };
            let entry = idx.softdeps.entry(normalise(name)).or_default();
            let mut post = false;
            for word in w {
                match word {
                    "pre:" => post = false,
                    "post:" => post = true,
                    m if post => entry.1.push(m.to_string()),
                    m => entry.0.push(m.to_string()),
                }
            }
        }
        idx
    }

    /// Reads `modules.dep` (required), `modules.alias` and `modules.softdep` from `moddir`.
    pub fn read(moddir: &Path) -> io::Result<Self> {
        let read = |f: &str, required: bool| match std::fs::read_to_string(moddir.join(f)) {
            Ok(s) => Ok(s),
            Err(e) if !required && e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("read {}: {e}", moddir.join(f).display()),
            )),
        };
        Ok(Self::parse(
            &read("modules.dep", true)?,
            &read("modules.alias", false)?,
            &read("modules.softdep", false)?,
        ))
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&normalise(name))
    }

    /// Module names whose alias patterns match `modalias`, sorted and without duplicates.
    pub fn match_alias(&self, modalias: &str) -> Vec<String> {
        let hits: BTreeSet<&str> = self
            .aliases
            .iter()
            .filter(|a| {
                modalias
                    .as_bytes()
                    .starts_with(&a.pattern.as_bytes()[..a.prefix_len])
            })
            .filter(|a| glob::glob_match(&a.pattern, modalias))
            .map(|a| a.module.as_str())
            .collect();
        hits.into_iter().map(str::to_string).collect()
    }

    /// A softdep target: a module name if we ship it, else whatever its alias resolves to.
    fn resolve(&self, name_or_alias: &str) -> Vec<String> {
        let n = normalise(name_or_alias);
        if self.modules.contains_key(&n) {
            vec![n]
        } else {
            self.match_alias(name_or_alias)
        }
    }

    /// Everything to load, in order, for `name`: softdep `pre:`, hard dependencies (right to left),
    /// the module, softdep `post:`. Names the index does not ship are left out (built in or absent).
    pub fn load_order(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.order(&normalise(name), &mut HashSet::new(), &mut out);
        out
    }

    fn order(&self, name: &str, seen: &mut HashSet<String>, out: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let soft = self.softdeps.get(name);
        for pre in soft.map(|s| s.0.as_slice()).unwrap_or_default() {
            for m in self.resolve(pre) {
                self.order(&m, seen, out);
            }
        }
        if let Some(m) = self.modules.get(name) {
            for d in m.deps.iter().rev() {
                self.order(d, seen, out);
            }
            out.push(name.to_string());
        }
        for post in soft.map(|s| s.1.as_slice()).unwrap_or_default() {
            for m in self.resolve(post) {
                self.order(&m, seen, out);
            }
        }
    }

    fn path(&self, name: &str) -> Option<&str> {
        self.modules.get(name).map(|m| m.path.as_str())
    }
}

/// What loading one module file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    New,
    Already,
    /// The module's init said ENODEV/ENXIO: nothing for it here (normal for CPU-specific crypto
    /// drivers such as crc32c_intel on a CPU without SSE4.2).
    NoDevice,
}

/// Loads one module file. The real one is [`Finit`].
pub trait Loader {
    fn load(&mut self, name: &str, path: &Path) -> io::Result<Loaded>;
}

/// `finit_module(2)` on the `.ko` file; `EEXIST` is [`Loaded::Already`].
pub struct Finit;

impl Loader for Finit {
    fn load(&mut self, _name: &str, path: &Path) -> io::Result<Loaded> {
        let f = std::fs::File::open(path)?;
        match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) => Ok(Loaded::New),
            Err(Errno::EEXIST) => Ok(Loaded::Already),
            Err(Errno::ENODEV | Errno::ENXIO) => Ok(Loaded::NoDevice),
            Err(e) => Err(e.into()),
        }
    }
}

/// Bounds of the coldplug loop.
#[derive(Debug, Clone, Copy)]
pub struct ColdplugOptions {
    pub max_rounds: usize,
    /// Pause between rounds: time for new devices to appear after their bus driver loaded.
    pub settle: Duration,
    pub timeout: Duration,
}

impl Default for ColdplugOptions {
    fn default() -> Self {
        ColdplugOptions {
            max_rounds: 8,
            settle: Duration::from_millis(150),
            timeout: Duration::from_secs(20),
        }
    }
}

/// What coldplug did; prints itself as one paragraph for the console.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ColdplugReport {
    pub rounds: usize,
    /// Distinct modalias strings seen.
    pub devices: usize,
    /// Newly loaded modules in load order, with the modalias (or `always`) that asked for them.
    pub loaded: Vec<(String, String)>,
    /// (module, error) for modules that failed to load.
    pub failed: Vec<(String, String)>,
    /// Modules that found nothing to drive ([`Loaded::NoDevice`]).
    pub no_device: Vec<String>,
    pub timed_out: bool,
}

impl fmt::Display for ColdplugReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} devices, {} modules loaded in {} rounds",
            self.devices,
            self.loaded.len(),
            self.rounds
        )?;
        if self.timed_out {
            write!(f, " (stopped at the time limit)")?;
        }
        if !self.no_device.is_empty() {
            write!(
                f,
                " ({} found no device: {})",
                self.no_device.len(),
                self.no_device.join(" ")
            )?;
        }
        let names: Vec<&str> = self.loaded.iter().map(|(m, _)| m.as_str()).collect();
        if !names.is_empty() {
            write!(f, ": {}", names.join(" "))?;
        }
        for (m, e) in &self.failed {
            write!(f, "; {m} failed: {e}")?;
        }
        Ok(())
    }
}

/// Loads modules for the devices under `sys_bus` (normally `/sys/bus`) in rounds, then the
/// `always` list. `moddir` is `/lib/modules/$(uname -r)`.
pub fn coldplug(
    index: &ModIndex,
    moddir: &Path,
    sys_bus: &Path,
    loader: &mut dyn Loader,
    always: &[&str],
    opts: ColdplugOptions,
) -> ColdplugReport {
    let start = Instant::now();
    let mut state = LoadState {
        index,
        moddir,
        loader,
        tried: HashSet::new(),
        report: ColdplugReport::default(),
    };
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        state.report.rounds += 1;
        let new: Vec<String> = read_modaliases(sys_bus)
            .into_iter()
            .filter(|a| !seen.contains(a))
            .collect();
        tracing::debug!(
            "modules: round {}: {} new modalias strings",
            state.report.rounds,
            new.len()
        );
        for alias in &new {
            for m in index.match_alias(alias) {
                state.load(&m, alias);
            }
        }
        seen.extend(new.iter().cloned());
        if new.is_empty() || state.report.rounds >= opts.max_rounds {
            break;
        }
        if start.elapsed() + opts.settle > opts.timeout {
            state.report.timed_out = true;
            break;
        }
        std::thread::sleep(opts.settle);
    }
    for m in always {
        if index.contains(m) {
            state.load(&normalise(m), "always");
        }
    }
    state.report.devices = seen.len();
    state.report
}

struct LoadState<'a> {
    index: &'a ModIndex,
    moddir: &'a Path,
    loader: &'a mut dyn Loader,
    tried: HashSet<String>,
    report: ColdplugReport,
}

impl LoadState<'_> {
    fn load(&mut self, module: &str, cause: &str) {
        for name in self.index.load_order(module) {
            if !self.tried.insert(name.clone()) {
                continue;
            }
            let Some(rel) = self.index.path(&name) else {
                continue;
            };
            let path: PathBuf = self.moddir.join(rel);
            let start = Instant::now();
            match self.loader.load(&name, &path) {
                Ok(Loaded::New) => {
                    tracing::debug!(
                        "modules: loaded {name} for {cause} in {} ms",
                        start.elapsed().as_millis()
                    );
                    self.report.loaded.push((name, cause.to_string()));
                }
                Ok(Loaded::Already) => {}
                Ok(Loaded::NoDevice) => {
                    tracing::debug!("modules: {name} (for {cause}) found no device");
                    self.report.no_device.push(name);
                }
                Err(e) => {
                    tracing::warn!("modules: load {name} ({}) for {cause}: {e}", path.display());
                    self.report.failed.push((name, e.to_string()));
                }
            }
        }
    }
}

/// Loads `names` (and what they need) that the index ships, outside any coldplug round.
pub fn load_list(
    index: &ModIndex,
    moddir: &Path,
    loader: &mut dyn Loader,
    names: &[&str],
) -> ColdplugReport {
    let mut state = LoadState {
        index,
        moddir,
        loader,
        tried: HashSet::new(),
        report: ColdplugReport::default(),
    };
    for m in names.iter().filter(|m| index.contains(m)) {
        state.load(&normalise(m), "always");
    }
    state.report
}

/// Every distinct modalias of the devices under `sys_bus`: `BUS/devices/DEV/modalias` (every
/// device with a modalias sits on a bus; two levels instead of walking all of /sys/devices, which
/// takes most of a second per round under TCG).
pub fn read_modaliases(sys_bus: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let dirs = |p: &Path| {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
    };
    for bus in dirs(sys_bus) {
        for dev in dirs(&bus.join("devices")) {
            if let Ok(s) = std::fs::read_to_string(dev.join("modalias")) {
                let s = s.trim();
                if !s.is_empty() {
                    out.insert(s.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/block/xen-blkfront.ko:
";
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias crypto-crc32c crc32c-intel
alias xen:vbd xen-blkfront
alias fs-ext4 ext4
";
    const SOFTDEP: &str = "# Soft dependencies\nsoftdep ext4 pre: crypto-crc32c\nsoftdep virtio_net post: xen_blkfront\n";

    fn idx() -> ModIndex {
        ModIndex::parse(DEP, ALIAS, SOFTDEP)
    }

    #[test]
    fn load_order_puts_softdeps_and_dependencies_first() {
        let i = idx();
        assert_eq!(
            i.load_order("ext4"),
            ["crc32c_intel", "crc16", "mbcache", "jbd2", "ext4"]
        );
        assert_eq!(
            i.load_order("virtio_net"),
            ["failover", "net_failover", "virtio_net", "xen_blkfront"]
        );
        assert_eq!(
            i.load_order("virtio-pci"),
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci"
            ]
        );
        assert_eq!(i.load_order("builtin_or_absent"), Vec::<String>::new());
        // A softdep cycle terminates.
        let c = ModIndex::parse("a.ko:\nb.ko:\n", "", "softdep a pre: b\nsoftdep b pre: a\n");
        assert_eq!(c.load_order("a"), ["b", "a"]);
    }

    #[test]
    fn aliases_match_by_glob() {
        let i = idx();
        assert_eq!(
            i.match_alias("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            ["virtio_pci"]
        );
        assert_eq!(i.match_alias("virtio:d00000001v00001AF4"), ["virtio_net"]);
        assert_eq!(
            i.match_alias("virtio:d00000002v00001AF4"),
            Vec::<String>::new()
        );
        assert_eq!(i.match_alias("xen:vbd"), ["xen_blkfront"]);
    }

    /// A fake kernel: loading virtio_pci makes a virtio-net device appear in the fake sysfs.
    struct FakeKernel {
        sys: PathBuf,
        loaded: Vec<String>,
    }

    impl Loader for FakeKernel {
        fn load(&mut self, name: &str, path: &Path) -> io::Result<Loaded> {
            assert_eq!(
                path.extension().and_then(|e| e.to_str()),
                Some("ko"),
                "{}",
                path.display()
            );
            if name == "failover" {
                return Ok(Loaded::Already);
            }
            if name == "crc32c_intel" {
                return Ok(Loaded::NoDevice);
            }
            if name == "crc16" {
                return Err(io::Error::from_raw_os_error(libc::ENOEXEC));
            }
            if self.loaded.iter().any(|l| l == name) {
                return Ok(Loaded::Already);
            }
            if name == "virtio_pci" {
                let d = self.sys.join("virtio/devices/virtio0");
                std::fs::create_dir_all(&d)?;
                std::fs::write(d.join("modalias"), "virtio:d00000001v00001AF4\n")?;
            }
            self.loaded.push(name.to_string());
            Ok(Loaded::New)
        }
    }

    #[test]
    fn coldplug_runs_rounds_until_nothing_new_appears() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys/bus");
        let real = dir.path().join("sys/devices/pci0000:00/0000:00:02.0");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(
            real.join("modalias"),
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n",
        )
        .unwrap();
        std::fs::create_dir_all(sys.join("pci/devices")).unwrap();
        // As in sysfs: bus/devices/X is a symlink to the device directory.
        std::os::unix::fs::symlink(&real, sys.join("pci/devices/0000:00:02.0")).unwrap();
        std::fs::create_dir_all(sys.join("platform/devices/serial8250")).unwrap();
        std::fs::write(
            sys.join("platform/devices/serial8250/modalias"),
            "platform:serial8250\n",
        )
        .unwrap();
        std::fs::create_dir_all(sys.join("cpu/devices/cpu0")).unwrap(); // no modalias: fine
        let mut k = FakeKernel {
            sys: sys.clone(),
            loaded: Vec::new(),
        };
        let opts = ColdplugOptions {
            settle: Duration::from_millis(1),
            ..Default::default()
        };
        let r = coldplug(
            &idx(),
            Path::new("/lib/modules/6.12"),
            &sys,
            &mut k,
            &["ext4", "nosuch", "virtio_net"],
            opts,
        );
        let late = load_list(
            &idx(),
            Path::new("/lib/modules/6.12"),
            &mut k,
            &["ext4", "crc16", "nosuch"],
        );
        assert_eq!(late.loaded.len(), 0, "already loaded by the always list");
        assert_eq!(
            late.failed.len(),
            1,
            "crc16 is retried in a new list and fails again"
        );
        assert_eq!(
            k.loaded,
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "net_failover",
                "virtio_net",
                "xen_blkfront",
                "mbcache",
                "jbd2",
                "ext4"
            ]
        );
        assert_eq!(r.rounds, 3);
        assert_eq!(r.devices, 3);
        assert_eq!(
            r.loaded[4],
            (
                "virtio_net".to_string(),
                "virtio:d00000001v00001AF4".to_string()
            )
        );
        assert_eq!(
            r.loaded.last().unwrap(),
            &("ext4".to_string(), "always".to_string())
        );
        assert_eq!(
            r.failed,
            [(
                "crc16".to_string(),
                io::Error::from_raw_os_error(libc::ENOEXEC).to_string()
            )]
        );
        assert!(!r.timed_out);
        let text = r.to_string();
        assert_eq!(r.no_device, ["crc32c_intel"]);
        assert!(text.starts_with("3 devices, 9 modules loaded in 3 rounds (1 found no device: crc32c_intel): virtio_pci_legacy_dev"), "{text}");
        assert!(text.contains("; crc16 failed: "), "{text}");
    }

    #[test]
    fn coldplug_stops_at_the_round_limit() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("bus");
        std::fs::create_dir_all(sys.join("pci/devices/a")).unwrap();
        std::fs::write(
            sys.join("pci/devices/a/modalias"),
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
        )
        .unwrap();
        let mut k = FakeKernel {
            sys: sys.clone(),
            loaded: Vec::new(),
        };
        let opts = ColdplugOptions {
            max_rounds: 1,
            settle: Duration::ZERO,
            timeout: Duration::from_secs(1),
        };
        let r = coldplug(&idx(), Path::new("/m"), &sys, &mut k, &[], opts);
        assert_eq!(r.rounds, 1);
        assert!(!k.loaded.contains(&"virtio_net".to_string()));
    }
}
