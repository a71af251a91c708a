//! Network namespaces owned by a test, removed on drop even when the test panics.

use std::{fs::File, os::fd::AsRawFd};

use crate::run;

/// Moves the *calling thread* into a fresh anonymous network namespace. The namespace (and
/// every interface created in it) disappears when the thread ends, so nothing leaks.
/// Commands spawned from this thread run inside it.
pub fn unshare_thread() {
    // SAFETY: unshare affects only the calling thread's namespaces.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    run("ip link set lo up");
}

/// A named namespace (`ip netns add`), deleted on drop. Names carry the test process id so
/// concurrent runs cannot collide.
pub struct NetNs {
    /// Full name.
    pub name: String,
}

impl NetNs {
    /// Creates `sl<pid>-<tag>` with loopback up.
    pub fn new(tag: &str) -> Self {
        let name = format!("sl{}-{tag}", std::process::id());
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
        run(&format!("ip netns add {name}"));
        let ns = Self { name };
        ns.exec("ip link set lo up");
        ns
    }

    /// Runs a shell command inside the namespace.
    pub fn exec(&self, cmd: &str) -> String {
        run(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', r"'\''")
        ))
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` with the calling thread inside this namespace, then switches back.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        let own = File::open("/proc/thread-self/ns/net").expect("own netns");
        let target = File::open(format!("/run/netns/{}", self.name)).expect("netns file");
        // SAFETY: setns on valid namespace fds; we restore the original below.
        assert_eq!(
            unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        // SAFETY: as above.
        unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) };
        out.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Creates a veth pair `a`/`b` and moves each end into the given namespaces (None: stay).
pub fn veth(a: &str, a_ns: Option<&NetNs>, b: &str, b_ns: Option<&NetNs>) {
    run(&format!("ip link add {a} type veth peer name {b}"));
    if let Some(ns) = a_ns {
        run(&format!("ip link set {a} netns {}", ns.name));
    }
    if let Some(ns) = b_ns {
        run(&format!("ip link set {b} netns {}", ns.name));
    }
}

/// Interface index in the calling thread's namespace (sysfs shows the mounter's namespace).
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

/// MAC address of an interface in the calling thread's namespace.
pub fn mac(name: &str) -> [u8; 6] {
    let out = run(&format!("ip -o link show {name}"));
    let text = out
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("link/ether");
    let v: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    v.try_into().expect("6 bytes")
}
