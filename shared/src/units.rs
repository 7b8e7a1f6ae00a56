//! How quantities are written for people: byte counts with binary units, durations as a clock.
//! The CLI, the agent and the server's pages write them alike.

/// Formats a byte count with binary units (`512 B`, `1.5 MiB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// "just now", "5 min ago", "3 h ago", "2 days ago": how long ago, said roughly.
pub fn ago(elapsed_secs: u64) -> String {
    match elapsed_secs {
        ..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", elapsed_secs / 60),
        3600..86_400 => format!("{} h ago", elapsed_secs / 3600),
        _ => format!("{} days ago", elapsed_secs / 86_400),
    }
}

/// "5 min ago" for Unix time `at` (the clock of this machine).
pub fn ago_since(at: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ago(now.saturating_sub(at))
}

/// `3:05`, or `1:02:03` past an hour.
pub fn clock(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}
