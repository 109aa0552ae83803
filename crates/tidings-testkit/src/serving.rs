//! Where a `tidings serve` started as a process listens. Suites and the benchmark start it with
//! `--listen 127.0.0.1:0` and read the port the system picked back from its log: a port found
//! free beforehand could be taken by another process before the server binds it.

/// The port in the start-up line (`tidings is serving … port=N`), once it is in `log`.
pub fn serving_port(log: &str) -> Option<u16> {
    let line = log
        .lines()
        .find(|line| line.contains("tidings is serving"))?;
    // Without a terminal the log may still be coloured: drop the escape sequences first.
    let mut plain = String::with_capacity(line.len());
    let mut in_escape = false;
    for c in line.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (false, c) => plain.push(c),
            (true, c) if c.is_ascii_alphabetic() => in_escape = false,
            (true, _) => {}
        }
    }
    let (_, after) = plain.split_once(" port=")?;
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_a_plain_or_coloured_start_up_line() {
        let plain = "2026-11-25T02:22:28Z  INFO tidings: tidings is serving listen=127.0.0.1:0 port=43597 settings=Settings { listen: 127.0.0.1:0 }";
        assert_eq!(serving_port(plain), Some(43597));
        let coloured = "\u{1b}[2m2026-11-25T02:26:41Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mtidings\u{1b}[0m\u{1b}[2m:\u{1b}[0m tidings is serving \u{1b}[3mlisten\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:0 \u{1b}[3mport\u{1b}[0m\u{1b}[2m=\u{1b}[0m38309 \u{1b}[3msettings\u{1b}[0m";
        assert_eq!(serving_port(coloured), Some(38309));
        assert_eq!(serving_port("INFO tidings: migrating\n"), None);
        assert_eq!(serving_port(""), None);
    }
}
