//! What `protocol::decode` must do with any bytes: the checks of the
//! `decode` fuzz target, replayed by `tests/fuzz_regressions.rs`.
//!
//! Beyond not panicking, the decoder's answer must agree with the frame's
//! declared length (incomplete only while bytes are missing, an error for a
//! bad length as soon as it is in, other errors decided by the frame alone),
//! a decoded message must be a request exactly when its tag is a request's,
//! and it must encode back to the very bytes it came from, but for the two
//! things the decoder drops on purpose: an error message's bytes past the
//! limit, and the request kinds a welcome names that this build does not
//! know.

use ferry::protocol::{decode, encode, DecodeError, Message, RequestKind, MAX_FRAME_LEN};

/// Longest `Error` message the encoder keeps (PROTOCOL.md §3); the library
/// keeps its constant private.
const MAX_ERROR_MESSAGE_LEN: usize = 1024;

/// Checks the decoder's answer for `bytes`; `Err` says which property broke.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    let declared = bytes.first_chunk::<4>().map(|p| u32::from_be_bytes(*p));
    // The whole frame's length on the wire, when its prefix is in and valid.
    let frame_end = declared
        .map(|len| len as usize)
        .filter(|len| (1..=MAX_FRAME_LEN).contains(len))
        .map(|len| 4 + len);
    match decode(bytes) {
        Ok(None) => match (declared, frame_end) {
            (None, _) => Ok(()),
            (Some(_), Some(end)) if bytes.len() < end => Ok(()),
            _ => Err(format!(
                "incomplete, yet the length prefix {declared:?} is bad or the whole frame is in \
                 ({} bytes)",
                bytes.len()
            )),
        },
        Err(DecodeError::FrameLength(len)) => {
            if declared == Some(len) && frame_end.is_none() {
                Ok(())
            } else {
                Err(format!(
                    "FrameLength({len}) for the length prefix {declared:?}"
                ))
            }
        }
        Err(error) => {
            // A bad length is FrameLength's; every other error needs the
            // whole frame in, and only the frame may decide it.
            let Some(end) = frame_end.filter(|&end| end <= bytes.len()) else {
                return Err(format!("{error:?} before the whole frame is in"));
            };
            let alone = decode(&bytes[..end]);
            if alone.as_ref() != Err(&error) {
                return Err(format!(
                    "{error:?} with the bytes after the frame, {alone:?} without them"
                ));
            }
            // Displaying an error must not panic either.
            let _ = error.to_string();
            Ok(())
        }
        Ok(Some((message, used))) => check_decoded(bytes, &message, used, frame_end),
    }
}

fn check_decoded(
    bytes: &[u8],
    message: &Message,
    used: usize,
    frame_end: Option<usize>,
) -> Result<(), String> {
    if frame_end != Some(used) || used > bytes.len() {
        return Err(format!(
            "decoded {message:?} from {used} bytes, but the frame is {frame_end:?} of {}",
            bytes.len()
        ));
    }
    let frame = &bytes[..used];
    let alone = decode(frame);
    if alone != Ok(Some((message.clone(), used))) {
        return Err(format!(
            "the frame alone decodes to {alone:?}, not {message:?}"
        ));
    }
    // Cut anywhere short of its end, the frame is incomplete, not an error.
    // All cuts would cost quadratic time; these are the edges.
    for cut in [4, used / 2, used - 1] {
        if cut < used && decode(&frame[..cut]) != Ok(None) {
            return Err(format!(
                "the first {cut} of the frame's {used} bytes are not incomplete"
            ));
        }
    }
    let _ = message.name();
    // The tag after the 4-byte length.
    let tag = frame[4];
    if message.request_kind() != RequestKind::from_tag(tag) {
        return Err(format!(
            "tag 0x{tag:02x} decodes to {message:?}, of request kind {:?}",
            message.request_kind()
        ));
    }
    check_re_encoding(frame, message)
}

/// The encoding is canonical: a decoded message encodes to the bytes it came
/// from, except that an `Error` message longer than the encoder's limit is
/// cut at a character boundary, and a `Welcome` keeps only the request kinds
/// this build knows, in their order.
fn check_re_encoding(frame: &[u8], message: &Message) -> Result<(), String> {
    let mut encoded = Vec::new();
    encode(message, &mut encoded)
        .map_err(|e| format!("a decoded {message:?} does not encode: {e}"))?;
    match message {
        Message::Error {
            code,
            message: text,
        } if text.len() > MAX_ERROR_MESSAGE_LEN => {
            let mut end = MAX_ERROR_MESSAGE_LEN;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let cut = Message::Error {
                code: *code,
                message: text[..end].to_owned(),
            };
            let again = decode(&encoded);
            if again != Ok(Some((cut.clone(), encoded.len()))) {
                return Err(format!(
                    "a long error message re-encodes to {again:?}, not {cut:?}"
                ));
            }
        }
        Message::Welcome { requests } => {
            // Length, tag, count, then one tag per kind.
            let named = frame.get(6..).unwrap_or_default();
            let known: Vec<RequestKind> = named
                .iter()
                .filter_map(|&tag| RequestKind::from_tag(tag))
                .collect();
            let all_known = known.len() == named.len();
            if *requests != known
                || (all_known && encoded != frame)
                || decode(&encoded) != Ok(Some((message.clone(), encoded.len())))
            {
                return Err(format!(
                    "a welcome naming {named:02x?} decodes to {requests:?} and encodes to \
                     {encoded:02x?}"
                ));
            }
        }
        _ if encoded != frame => {
            return Err(format!(
                "{message:?} decoded from {frame:02x?} encodes to {encoded:02x?}"
            ));
        }
        _ => {}
    }
    Ok(())
}
