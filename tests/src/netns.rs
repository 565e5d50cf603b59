//! Hosts of their own on this machine: one network namespace per host, each with an address on
//! a private bridge that the test process (the root namespace) also sits on, so that a test can
//! cut hosts off from each other (iptables DROP inside the namespaces) while it still reaches
//! every one of them. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2 and iptables;
//! [`Network::create`] says why not otherwise, for the test to print and skip.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A bridge with `n` namespaces on it.
pub struct Network {
    tag: String,
    subnet: String,
    hosts: usize,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Network {
    /// Creates `n` hosts: namespaces `<tag>-<i>` with address `<subnet>.<10+i>/24`, and the
    /// bridge at `<subnet>.1` in this namespace.
    ///
    /// Errors: not root, or `ip`/`iptables` missing or refused (the message says which).
    pub fn create(n: usize) -> Result<Network, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("not root: network namespaces need CAP_NET_ADMIN".into());
        }
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = (std::process::id().wrapping_mul(7) + k) % 0xffff;
        let tag = format!("bn{id:04x}");
        let subnet = format!("10.{}.{}", 200 + (id % 50), (id / 50) % 250);
        let net = Network { tag, subnet, hosts: 0 };
        let bridge = net.bridge();
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        let mut net = net;
        run(&["ip", "addr", "add", &format!("{}.1/24", net.subnet), "dev", &bridge])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        // Docker's FORWARD policy drops bridged traffic that br_netfilter hands to iptables
        run(&["iptables", "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT"])?;
        for i in 0..n {
            let (ns, veth, peer) = (net.ns(i), format!("{}v{i}", net.tag), format!("{}p{i}", net.tag));
            run(&["ip", "netns", "add", &ns])?;
            net.hosts = i + 1;
            run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
            run(&["ip", "link", "set", &peer, "netns", &ns])?;
            run(&["ip", "link", "set", &veth, "master", &bridge])?;
            run(&["ip", "link", "set", &veth, "up"])?;
            run(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &format!("{}/24", net.ip(i)), "dev", &peer])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", &peer, "up"])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            run(&["ip", "netns", "exec", &ns, "iptables", "-F", "INPUT"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// This namespace's address on the bridge (where processes outside the hosts listen).
    pub fn outside_ip(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// Cuts the hosts in `side` off from every other host (both ways); the test process still
    /// reaches all of them.
    pub fn partition(&self, side: &[usize]) -> Result<(), String> {
        for a in 0..self.hosts {
            for b in 0..self.hosts {
                if side.contains(&a) != side.contains(&b) {
                    run(&[
                        "ip",
                        "netns",
                        "exec",
                        &self.ns(a),
                        "iptables",
                        "-A",
                        "INPUT",
                        "-s",
                        &self.ip(b),
                        "-j",
                        "DROP",
                    ])?;
                }
            }
        }
        Ok(())
    }

    /// Ends every partition.
    pub fn heal(&self) -> Result<(), String> {
        for a in 0..self.hosts {
            run(&["ip", "netns", "exec", &self.ns(a), "iptables", "-F", "INPUT"])?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let bridge = self.bridge();
        for i in 0..self.hosts {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
            let _ = run(&["ip", "link", "del", &format!("{}v{i}", self.tag)]);
        }
        let _ = run(&["iptables", "-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT"]);
        let _ = run(&["ip", "link", "del", &bridge]);
    }
}
