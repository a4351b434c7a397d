//! Writing to stdout and stderr without panicking when a pipe closes early (`mediaproc inspect | head`).

use std::io::Write;

/// Writes `text` and a newline to stdout; a closed pipe is not an error worth reporting.
pub fn line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

/// Writes one line to stderr, prefixed with the program's name.
pub fn error_line(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "mediaproc: {text}");
}

/// Reads a file, or standard input for `-` or no path, refusing more than `limit` bytes.
pub fn read_input(
    path: Option<&std::path::Path>,
    limit: usize,
) -> Result<(String, Vec<u8>), String> {
    use std::io::Read;
    let (name, mut reader): (String, Box<dyn Read>) = match path {
        None => ("<stdin>".to_owned(), Box::new(std::io::stdin().lock())),
        Some(path) if path.as_os_str() == "-" => {
            ("<stdin>".to_owned(), Box::new(std::io::stdin().lock()))
        }
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|err| format!("{}: cannot open: {err}", path.display()))?;
            (path.display().to_string(), Box::new(file))
        }
    };
    let mut bytes = Vec::new();
    // Read one byte past the limit so an oversized input is told apart from one exactly at the limit.
    reader
        .by_ref()
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("{name}: cannot read: {err}"))?;
    if bytes.len() > limit {
        return Err(format!(
            "{name}: input is larger than the limit of {limit} bytes"
        ));
    }
    Ok((name, bytes))
}
