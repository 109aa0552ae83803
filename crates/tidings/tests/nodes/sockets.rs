//! Which TCP connections a process holds, read from Linux's `/proc`: tells which node sent a
//! request (the endpoint sees the connection's port; the node's open sockets name the same port).

use std::collections::HashSet;

/// Local ports of the TCP connections process `pid` holds to `remote_port` (on any address).
/// Empty when `/proc` cannot be read (the process is gone).
pub fn ports_connected_to(pid: u32, remote_port: u16) -> HashSet<u16> {
    let inodes = socket_inodes(pid);
    let mut ports = HashSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        // Columns: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(inode)) =
                (fields.get(1), fields.get(2), fields.get(9))
            else {
                continue;
            };
            if !inodes.contains(*inode) || port_of(remote) != Some(remote_port) {
                continue;
            }
            if let Some(port) = port_of(local) {
                ports.insert(port);
            }
        }
    }
    ports
}

/// `ADDRESS:PORT` in hex, as `/proc/net/tcp` writes it.
fn port_of(address: &str) -> Option<u16> {
    let (_, port) = address.rsplit_once(':')?;
    u16::from_str_radix(port, 16).ok()
}

/// Inode numbers of the sockets among `pid`'s open files.
fn socket_inodes(pid: u32) -> HashSet<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect()
}
