//! How a viewer finds the stream: the WebSocket path the host serves it at
//! (rule `video.stream.path`) and the `#psk=` fragment of the page's URL
//! that carries the pre-shared key to the browser (rule
//! `video.stream.psk-fragment`; a fragment never reaches the server).

use crate::VideoError;

// r[impl video.stream.path]
/// The WebSocket path of the stream on the host's WebSocket port.
pub const STREAM_PATH: &str = "/stream";

/// The stream's WebSocket URL on `host` (`HOST:PORT`): `wss://` when the
/// page was loaded over https, else `ws://`.
pub fn stream_url(host: &str, tls: bool) -> String {
    let scheme = if tls { "wss" } else { "ws" };
    format!("{scheme}://{host}{STREAM_PATH}")
}

// r[impl video.stream.psk-fragment]
/// The URL fragment carrying `psk`: `#psk=` and the key in lower-case hex.
pub fn psk_fragment(psk: &[u8]) -> String {
    let mut s = String::with_capacity(5 + 2 * psk.len() + 1);
    s.push_str("#psk=");
    for b in psk {
        s.push(char::from_digit(u32::from(b >> 4), 16).expect("a nibble"));
        s.push(char::from_digit(u32::from(b & 15), 16).expect("a nibble"));
    }
    s
}

/// The key of a URL fragment (`#a=b&psk=<hex>&...`, with or without the
/// leading `#`): `None` when it has no `psk=` entry.
///
/// # Errors
/// [`VideoError::BadPskFragment`] when the key is empty, of odd length or
/// not hex.
pub fn parse_psk_fragment(fragment: &str) -> Result<Option<Vec<u8>>, VideoError> {
    let Some(hex) = fragment
        .trim_start_matches('#')
        .split('&')
        .find_map(|kv| kv.strip_prefix("psk="))
    else {
        return Ok(None);
    };
    parse_psk_hex(hex).map(Some)
}

/// A key written as the fragment writes it (hex, either case), as a page
/// may also be given it directly.
///
/// # Errors
/// [`VideoError::BadPskFragment`] when the key is empty, of odd length or
/// not hex.
pub fn parse_psk_hex(hex: &str) -> Result<Vec<u8>, VideoError> {
    let hex = hex.as_bytes();
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return Err(VideoError::BadPskFragment);
    }
    let digit = |c: u8| (c as char).to_digit(16);
    hex.chunks(2)
        .map(|p| Some((digit(p[0])? << 4 | digit(p[1])?) as u8))
        .collect::<Option<Vec<u8>>>()
        .ok_or(VideoError::BadPskFragment)
}

#[cfg(test)]
mod tests {
    use super::*;

    // r[verify video.stream.psk-fragment]
    #[test]
    fn the_fragment_round_trips_and_bad_keys_are_refused() {
        let key: Vec<u8> = (0..=255u8).collect();
        let frag = psk_fragment(&key);
        assert!(frag.starts_with("#psk=000102"));
        assert_eq!(parse_psk_fragment(&frag).unwrap(), Some(key));
        assert_eq!(psk_fragment(&[0xab, 0x01]), "#psk=ab01");
        assert_eq!(
            parse_psk_fragment("x=1&psk=AB01&y").unwrap(),
            Some(vec![0xab, 1])
        );
        assert_eq!(parse_psk_fragment("").unwrap(), None);
        assert_eq!(parse_psk_fragment("#other=1").unwrap(), None);
        for bad in ["#psk=", "#psk=abc", "#psk=zz", "#psk=+1", "#psk=é1"] {
            assert!(
                matches!(parse_psk_fragment(bad), Err(VideoError::BadPskFragment)),
                "{bad}"
            );
        }
    }

    // r[verify video.stream.path]
    #[test]
    fn the_stream_url_uses_the_stream_path() {
        assert_eq!(stream_url("h:1", false), "ws://h:1/stream");
        assert_eq!(stream_url("[::1]:9", true), "wss://[::1]:9/stream");
    }
}
