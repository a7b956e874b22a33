//! Answers to publishes sent over a kept-alive HTTP/1.1 connection, read without an HTTP
//! library: heads end with an empty line, bodies are small and have a `Content-Length` (or
//! are one short chunked body).

/// Takes the first complete answer off the front of `buf`: `Some(Ok(()))` for a 2xx,
/// `Some(Err(status line and the body's start))` for any other status, `None` while the
/// answer is still incomplete.
pub(crate) fn next_answer(buf: &mut Vec<u8>) -> Option<Result<(), String>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body_len = if head.contains("transfer-encoding: chunked") {
        // Small bodies: the whole chunked body ends with the last-chunk line.
        buf[head_end + 4..].windows(5).position(|w| w == b"0\r\n\r\n")? + 5
    } else {
        let len = head.lines().find_map(|l| l.strip_prefix("content-length:"));
        len.and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0)
    };
    if buf.len() < head_end + 4 + body_len {
        return None;
    }
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse::<u16>().ok());
    let answer = if status.is_some_and(|code| (200..300).contains(&code)) {
        Ok(())
    } else {
        let status_line = String::from_utf8_lossy(&buf[..head_end]);
        let status_line = status_line.lines().next().unwrap_or_default().to_owned();
        let body = &buf[head_end + 4..head_end + 4 + body_len.min(200)];
        Err(format!("`{status_line}` {}", String::from_utf8_lossy(body).trim()))
    };
    buf.drain(..head_end + 4 + body_len);
    Some(answer)
}

/// A `POST` of `body` (JSON) to `path`, with `auth` (a whole header line, or empty).
pub(crate) fn post(path: &str, host: std::net::SocketAddr, auth: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_answers_one_at_a_time() {
        let mut buf = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 503 Service Unavailable\r\n\
                        content-length: 9\r\n\r\n{\"e\":1}  HTTP/1.1 200 OK\r\ncontent-len"
            .to_vec();
        assert_eq!(next_answer(&mut buf), Some(Ok(())));
        let refused = next_answer(&mut buf).unwrap().unwrap_err();
        assert!(refused.starts_with("`HTTP/1.1 503 Service Unavailable` {\"e\":1}"), "{refused}");
        assert_eq!(next_answer(&mut buf), None);
        buf.extend_from_slice(b"gth: 0\r\n\r\n");
        assert_eq!(next_answer(&mut buf), Some(Ok(())));
        assert!(buf.is_empty());
    }

    #[test]
    fn reads_a_chunked_answer() {
        let mut buf = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".to_vec();
        assert_eq!(next_answer(&mut buf), Some(Ok(())));
        assert!(buf.is_empty());
    }
}
