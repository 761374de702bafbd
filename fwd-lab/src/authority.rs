//! A DNS authority for the labs: dnsmasq in a namespace, answering only from the records
//! given (no resolv.conf, no hosts file), logging its queries; stopped when dropped.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::{Netns, wait_for};

pub struct Authority(Child);

impl Authority {
    /// Starts dnsmasq on `listen`:`port` in `ns` with `records` (dnsmasq options such as
    /// `--host-record=NAME,ADDR`), logging into `log`; returns once it accepts TCP.
    pub fn start(
        ns: &Netns,
        listen: Ipv4Addr,
        port: u16,
        records: &[String],
        log: &Path,
    ) -> anyhow::Result<Authority> {
        let log = std::fs::File::create(log)?;
        let child = ns
            .command("dnsmasq")?
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
                "--log-queries",
                "--log-facility=-",
            ])
            .arg(format!("--listen-address={listen}"))
            .arg(format!("--port={port}"))
            .args(records)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dnsmasq (cargo xtask setup installs dnsmasq-base)")?;
        let authority = Authority(child);
        let addr = SocketAddr::from((listen, port));
        let up = wait_for(Duration::from_secs(5), || {
            ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)))
                .ok()?
                .ok()
        });
        if up.is_none() {
            anyhow::bail!("dnsmasq did not come up on {addr}");
        }
        Ok(authority)
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
