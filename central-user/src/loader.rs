//! Loads the XDP object, adopts or creates the pinned maps, and attaches (or atomically
//! replaces) the program on each ingress interface through a pinned bpf_link, so that a
//! restarting `sluice-central` never interrupts forwarding.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use sluice_common::{Settings, layout, names, settings_flags};

use crate::maps::Maps;

/// The XDP object built by `build.rs` (empty when built with `AYA_BUILD_SKIP=1`).
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-xdp"));

/// An XDP program that only returns `XDP_PASS` (program `sluice_baseline`): the benchmark
/// baseline for the harness cost.
pub static BASELINE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-xdp-baseline"));

/// Program name inside the object.
pub const PROGRAM: &str = "sluice_xdp";

/// How to attach.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Driver (native) mode only.
    Native,
    /// Generic (skb) mode only.
    Skb,
    /// Native, falling back to generic when the driver refuses.
    Auto,
}

/// Errors of loading and attaching.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Built with `AYA_BUILD_SKIP=1`.
    #[error("this binary was built without its XDP object (AYA_BUILD_SKIP); rebuild without it")]
    NoObject,
    /// bpffs missing and not mountable.
    #[error("cannot mount bpffs at {path}: {source}")]
    Bpffs {
        /// Mount point.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A pinned map from an older build does not match this build's layout.
    #[error(
        "pinned map {path} has {what}; it was created by an incompatible build. \
         Run `sluice-central detach --purge` to remove the pins (forwarding stops until the next start)"
    )]
    IncompatiblePin {
        /// Pin path.
        path: PathBuf,
        /// What differs.
        what: String,
    },
    /// Neither native nor generic attach worked.
    #[error("cannot attach XDP to {iface} in {mode:?} mode: {source}")]
    Attach {
        /// Interface.
        iface: String,
        /// Mode tried last.
        mode: AttachMode,
        /// Cause.
        source: aya::programs::ProgramError,
    },
    /// Any other aya error, with what we were doing.
    #[error("{what}: {source}")]
    Aya {
        /// What we were doing.
        what: String,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Filesystem error.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn aya_err<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> LoadError {
    let what = what.into();
    move |e| LoadError::Aya {
        what,
        source: Box::new(e),
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
    let what = what.into();
    move |source| LoadError::Io { what, source }
}

/// What to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Pin directory (default [`sluice_common::PIN_DIR`]).
    pub pin_dir: PathBuf,
    /// Ingress interfaces to attach to (empty: load and pin only, e.g. for fixtures).
    pub interfaces: Vec<String>,
    /// Attach mode.
    pub mode: AttachMode,
    /// Decrement TTL/hop limit when forwarding.
    pub decrement_ttl: bool,
}

/// One attached interface.
#[derive(Clone, Debug)]
pub struct Attachment {
    /// Interface name.
    pub iface: String,
    /// Mode in effect (for an adopted link, the mode it was created with).
    pub mode: &'static str,
    /// True when an existing pinned link was updated in place.
    pub adopted: bool,
}

/// A loaded data plane: the program, its maps and the event ring.
pub struct Loaded {
    ebpf: Ebpf,
    /// Typed maps.
    pub maps: Maps,
    /// New-exporter / peer-down events from the XDP program.
    pub events: RingBuf<MapData>,
    /// Interfaces the program is attached to.
    pub attachments: Vec<Attachment>,
}

impl Loaded {
    /// Splits into parts; the program object is dropped, which is fine once attached: the
    /// pinned links keep it running.
    pub fn into_parts(self) -> LoadedParts {
        LoadedParts {
            maps: self.maps,
            events: self.events,
            attachments: self.attachments,
        }
    }

    /// The XDP program (for `BPF_PROG_TEST_RUN`).
    pub fn program(&mut self) -> Result<&mut Xdp, LoadError> {
        xdp_program(&mut self.ebpf)
    }
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    ebpf.program_mut(PROGRAM)
        .ok_or_else(|| LoadError::Aya {
            what: format!("program {PROGRAM}"),
            source: "not in object".into(),
        })?
        .try_into()
        .map_err(aya_err("program type"))
}

/// [`Loaded`] without the program object.
pub struct LoadedParts {
    /// Typed maps.
    pub maps: Maps,
    /// Event ring.
    pub events: RingBuf<MapData>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
}

/// Loads the object with every map pinned under `opts.pin_dir` (adopting existing pins), and
/// attaches to `opts.interfaces`.
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    if XDP_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    raise_memlock();
    ensure_bpffs(&opts.pin_dir)?;
    fs::create_dir_all(&opts.pin_dir)
        .map_err(io_err(format!("create {}", opts.pin_dir.display())))?;
    check_pins(&opts.pin_dir)?;

    let paths: Vec<(&'static str, PathBuf)> = names::ALL
        .iter()
        .map(|&n| (n, opts.pin_dir.join(n)))
        .collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(XDP_OBJECT)
        .map_err(aya_err("load XDP object"))?;
    {
        let prog = xdp_program(&mut ebpf)?;
        prog.load()
            .map_err(aya_err("verifier rejected the XDP program"))?;
    }
    let events = RingBuf::try_from(ebpf.take_map(names::EVENTS).ok_or_else(|| LoadError::Aya {
        what: "map EVENTS".into(),
        source: "not in object".into(),
    })?)
    .map_err(aya_err("map EVENTS"))?;
    let mut maps = Maps::from_source(|name| {
        ebpf.take_map(name)
            .ok_or_else(|| crate::controller::dataplane::DataPlaneError::Invalid {
                map: name,
                what: "not in object".into(),
            })
    })
    .map_err(aya_err("open maps"))?;
    let flags = if opts.decrement_ttl {
        settings_flags::DECREMENT_TTL
    } else {
        0
    };
    maps.set_settings(Settings { flags, _pad: 0 })
        .map_err(aya_err("write SETTINGS"))?;

    let mut loaded = Loaded {
        ebpf,
        maps,
        events,
        attachments: Vec::new(),
    };
    for iface in &opts.interfaces {
        let a = attach(&mut loaded, &opts.pin_dir, iface, opts.mode)?;
        tracing::info!(iface = %a.iface, mode = a.mode, adopted = a.adopted, "XDP attached");
        loaded.attachments.push(a);
    }
    Ok(loaded)
}

fn link_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link_{iface}"))
}

fn attach(
    loaded: &mut Loaded,
    pin_dir: &Path,
    iface: &str,
    mode: AttachMode,
) -> Result<Attachment, LoadError> {
    let path = link_path(pin_dir, iface);
    let prog = loaded.program()?;
    if path.exists() {
        // Atomic replacement of the running program: no packet sees an empty hook.
        let pinned =
            PinnedLink::from_pin(&path).map_err(aya_err(format!("open {}", path.display())))?;
        let link =
            XdpLink::try_from(FdLink::from(pinned)).map_err(aya_err("pinned link is not XDP"))?;
        prog.attach_to_link(link)
            .map_err(aya_err(format!("replace XDP program on {iface}")))?;
        return Ok(Attachment {
            iface: iface.to_owned(),
            mode: "adopted",
            adopted: true,
        });
    }
    let tries: &[(XdpMode, &'static str, AttachMode)] = match mode {
        AttachMode::Native => &[(XdpMode::Driver, "native", AttachMode::Native)],
        AttachMode::Skb => &[(XdpMode::Skb, "skb", AttachMode::Skb)],
        AttachMode::Auto => &[
            (XdpMode::Driver, "native", AttachMode::Native),
            (XdpMode::Skb, "skb", AttachMode::Skb),
        ],
    };
    let mut last = None;
    for &(xdp_mode, label, cfg) in tries {
        match prog.attach(iface, xdp_mode) {
            Ok(id) => {
                let link = prog.take_link(id).map_err(aya_err("take link"))?;
                let fd = FdLink::try_from(link).map_err(aya_err(
                    "kernel attached through netlink (no bpf_link); cannot pin, restarts would interrupt forwarding",
                ))?;
                fd.pin(&path)
                    .map_err(aya_err(format!("pin {}", path.display())))?;
                return Ok(Attachment {
                    iface: iface.to_owned(),
                    mode: label,
                    adopted: false,
                });
            }
            Err(e) => {
                tracing::warn!(iface, mode = label, error = %e, "XDP attach failed");
                last = Some((cfg, e));
            }
        }
    }
    let (mode, source) = last.ok_or_else(|| LoadError::Aya {
        what: "attach".into(),
        source: "no mode".into(),
    })?;
    Err(LoadError::Attach {
        iface: iface.to_owned(),
        mode,
        source,
    })
}

/// Detaches from `iface` by removing its pinned link. With `purge`, removes the map pins too.
pub fn detach(pin_dir: &Path, iface: Option<&str>, purge: bool) -> Result<Vec<String>, LoadError> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_err(format!("read {}", pin_dir.display()))(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("read pin dir"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_link = name
            .strip_prefix("link_")
            .is_some_and(|i| iface.is_none_or(|want| want == i));
        if is_link || (purge && names::ALL.contains(&name.as_str())) {
            fs::remove_file(entry.path())
                .map_err(io_err(format!("remove {}", entry.path().display())))?;
            removed.push(name);
        }
    }
    if purge {
        let _ = fs::remove_dir(pin_dir);
    }
    Ok(removed)
}

/// Interfaces with a pinned link.
pub fn pinned_links(pin_dir: &Path) -> Vec<String> {
    fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("link_"))
                .map(str::to_owned)
        })
        .collect()
}

/// Refuses to adopt pins whose layout differs from this build's (aya would adopt them blindly).
fn check_pins(pin_dir: &Path) -> Result<(), LoadError> {
    for want in layout() {
        let path = pin_dir.join(want.name);
        if !path.exists() {
            continue;
        }
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map_err(aya_err(format!("inspect {}", path.display())))?;
        let kind = info
            .map_type()
            .map_err(aya_err(format!("inspect {}", path.display())))?;
        if kind as u32 != want.kind as u32 {
            return Err(LoadError::IncompatiblePin {
                path,
                what: format!("type {kind:?}, this build needs {:?}", want.kind),
            });
        }
        let got = (info.key_size(), info.value_size(), info.max_entries());
        let need = (want.key_size, want.value_size, want.max_entries);
        if got != need {
            return Err(LoadError::IncompatiblePin {
                path,
                what: format!("(key, value, entries) = {got:?}, this build needs {need:?}"),
            });
        }
    }
    Ok(())
}

fn ensure_bpffs(pin_dir: &Path) -> Result<(), LoadError> {
    let root = Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(root) {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let (src, target, fstype) = (c("bpf"), c("/sys/fs/bpf"), c("bpf"));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::Bpffs {
            path: root.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!("mounted bpffs at /sys/fs/bpf");
    Ok(())
}

fn raise_memlock() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}
