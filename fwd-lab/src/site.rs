//! The site config (`fwd.toml`) a test, the lab or a bench runs fwd with: one builder for
//! the keys they all set (policy directory, pins and state, control socket, metrics,
//! interfaces), with room for any other key or table as TOML text.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use crate::Pins;

/// A site config under construction; `render` gives its text, `write` a file.
#[derive(Clone, Debug)]
pub struct SiteConfig {
    comment: Option<String>,
    policy_dir: PathBuf,
    action: Option<String>,
    pin_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    control_socket: PathBuf,
    on_exit: Option<String>,
    metrics: Option<String>,
    watch: Option<bool>,
    interfaces: Vec<(String, &'static str)>,
    top: String,
    tables: String,
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(p: &Path) -> String {
    toml_str(&p.to_string_lossy())
}

impl SiteConfig {
    /// Vendor files from `policy_dir`; the control socket `control.sock` beside the config.
    pub fn new(policy_dir: impl Into<PathBuf>) -> SiteConfig {
        SiteConfig {
            comment: None,
            policy_dir: policy_dir.into(),
            action: None,
            pin_dir: None,
            state_dir: None,
            control_socket: PathBuf::from("control.sock"),
            on_exit: None,
            metrics: None,
            watch: None,
            interfaces: Vec::new(),
            top: String::new(),
            tables: String::new(),
        }
    }

    /// A first line saying what the config is for.
    pub fn comment(mut self, text: &str) -> Self {
        self.comment = Some(text.to_string());
        self
    }

    /// `enforce` or `audit`.
    pub fn action(mut self, action: &str) -> Self {
        self.action = Some(action.to_string());
        self
    }

    /// Pins in the test's own directory, state in `state/` beside the config: nothing in
    /// the system's defaults.
    pub fn pins(mut self, pins: &Pins) -> Self {
        self.pin_dir = Some(pins.dir.clone());
        self.state_dir.get_or_insert_with(|| PathBuf::from("state"));
        self
    }

    pub fn pin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pin_dir = Some(dir.into());
        self
    }

    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.control_socket = path.into();
        self
    }

    /// `keep` or `detach`.
    pub fn on_exit(mut self, on_exit: &str) -> Self {
        self.on_exit = Some(on_exit.to_string());
        self
    }

    /// `[metrics] listen`.
    pub fn metrics(mut self, listen: impl std::fmt::Display) -> Self {
        self.metrics = Some(listen.to_string());
        self
    }

    /// `[reload] watch`.
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = Some(watch);
        self
    }

    /// An `[[interface]]` in gateway mode.
    pub fn gateway(mut self, iface: &str) -> Self {
        self.interfaces.push((iface.to_string(), "gateway"));
        self
    }

    /// An `[[interface]]` in host mode.
    pub fn host(mut self, iface: &str) -> Self {
        self.interfaces.push((iface.to_string(), "host"));
        self
    }

    /// More top-level keys, as TOML lines.
    pub fn top(mut self, lines: &str) -> Self {
        self.top.push_str(lines);
        if !lines.is_empty() && !lines.ends_with('\n') {
            self.top.push('\n');
        }
        self
    }

    /// More tables, as TOML text (after the interfaces).
    pub fn tables(mut self, text: &str) -> Self {
        self.tables.push_str(text);
        if !text.is_empty() && !text.ends_with('\n') {
            self.tables.push('\n');
        }
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(c) = &self.comment {
            let _ = writeln!(out, "# {c}");
        }
        let _ = writeln!(out, "policy_dir = {}", path_str(&self.policy_dir));
        if let Some(a) = &self.action {
            let _ = writeln!(out, "action = {}", toml_str(a));
        }
        if let Some(p) = &self.pin_dir {
            let _ = writeln!(out, "pin_dir = {}", path_str(p));
        }
        if let Some(s) = &self.state_dir {
            let _ = writeln!(out, "state_dir = {}", path_str(s));
        }
        let _ = writeln!(out, "control_socket = {}", path_str(&self.control_socket));
        if let Some(o) = &self.on_exit {
            let _ = writeln!(out, "on_exit = {}", toml_str(o));
        }
        out.push_str(&self.top);
        if let Some(m) = &self.metrics {
            let _ = write!(out, "\n[metrics]\nlisten = {}\n", toml_str(m));
        }
        if let Some(w) = self.watch {
            let _ = write!(out, "\n[reload]\nwatch = {w}\n");
        }
        for (name, mode) in &self.interfaces {
            let _ = write!(
                out,
                "\n[[interface]]\nname = {}\nmode = {}\n",
                toml_str(name),
                toml_str(mode)
            );
        }
        if !self.tables.is_empty() {
            out.push('\n');
            out.push_str(&self.tables);
        }
        out
    }

    /// Writes the config to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_key_once_in_a_valid_shape() {
        let text = SiteConfig::new("/srv/pol \"x\"")
            .comment("a test")
            .action("audit")
            .pin_dir("/sys/fs/bpf/t")
            .state_dir("state")
            .on_exit("detach")
            .top("exempt = [\"192.0.2.0/24\"]")
            .metrics("127.0.0.1:9")
            .watch(false)
            .gateway("lan0")
            .host("eth0")
            .tables("[dns]\nupstream = [\"192.0.2.53\"]")
            .render();
        assert_eq!(
            text,
            "# a test\npolicy_dir = \"/srv/pol \\\"x\\\"\"\naction = \"audit\"\n\
             pin_dir = \"/sys/fs/bpf/t\"\nstate_dir = \"state\"\ncontrol_socket = \"control.sock\"\n\
             on_exit = \"detach\"\nexempt = [\"192.0.2.0/24\"]\n\n[metrics]\nlisten = \"127.0.0.1:9\"\n\n\
             [reload]\nwatch = false\n\n[[interface]]\nname = \"lan0\"\nmode = \"gateway\"\n\n\
             [[interface]]\nname = \"eth0\"\nmode = \"host\"\n\n[dns]\nupstream = [\"192.0.2.53\"]\n"
        );
    }
}
