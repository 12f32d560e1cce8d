//! What `RemoteName::parse` promises for any string: the checks of the
//! `name` fuzz target, replayed by `tests/fuzz_regressions.rs`.
//!
//! An accepted name must be one the server's path gate can rely on, checked
//! here by other means than the parser's own (std's path components beside
//! the spelled-out rules of PROTOCOL.md §7), with `parent` and `file_name`
//! consistent with it, and be the typed name made plain (`.` components and
//! one trailing `/` dropped), which parses as itself; a refused name must
//! really break the rule its error names. `parse_dir`, for list and stat,
//! must agree with `parse` but take the root: what `parse` refuses as
//! empty or as the root itself.

use std::path::{Component, Path};

use ferry::protocol::{
    decode, encode, Message, NameError, RemoteName, MAX_COMPONENT_LEN, MAX_NAME_LEN, TEMP_PREFIX,
};

/// Checks what the parser makes of `bytes`, read as UTF-8 with invalid
/// sequences replaced (names arrive as checked UTF-8 strings).
pub fn check(bytes: &[u8]) -> Result<(), String> {
    let name = String::from_utf8_lossy(bytes);
    let parsed = RemoteName::parse(&name);
    match &parsed {
        Ok(parsed) => check_accepted(&name, parsed).map_err(|e| format!("accepted {name:?}: {e}")),
        Err(error) => check_refused(&name, error).map_err(|e| format!("refused {name:?}: {e}")),
    }?;
    check_dir_agrees(&name, parsed)
}

/// `parse_dir` gives what `parse` gives, but the root (`None`) where
/// `parse` refuses a name as empty or as the root.
fn check_dir_agrees(name: &str, parsed: Result<RemoteName, NameError>) -> Result<(), String> {
    let expected = match parsed {
        Ok(parsed) => Ok(Some(parsed)),
        Err(NameError::Empty | NameError::Root) => Ok(None),
        Err(error) => Err(error),
    };
    let as_dir = RemoteName::parse_dir(name);
    if as_dir != expected {
        return Err(format!(
            "{name:?}: parse_dir gives {as_dir:?}, parse {expected:?}"
        ));
    }
    Ok(())
}

fn check_accepted(typed: &str, parsed: &RemoteName) -> Result<(), String> {
    if typed.len() > MAX_NAME_LEN {
        return Err(format!("but it is {} bytes long", typed.len()));
    }
    let name = plain_form(typed);
    if parsed.as_str() != name || parsed.to_string() != name {
        return Err(format!("but it reads back as {:?}", parsed.as_str()));
    }
    // The plain form is a fixed point: a client may send back a name it
    // was given, and the server means the same file by it.
    if RemoteName::parse(&name).as_ref() != Ok(parsed) {
        return Err(format!(
            "but its plain form {name:?} parses as {:?}",
            RemoteName::parse(&name)
        ));
    }
    let name = name.as_str();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("but it is {} bytes long", name.len()));
    }
    if name.starts_with('/') || name.contains('\\') || name.chars().any(char::is_control) {
        return Err("but it is absolute, or has a backslash or control character".into());
    }
    let components: Vec<&str> = name.split('/').collect();
    for component in &components {
        if component.is_empty()
            || *component == "."
            || *component == ".."
            || component.len() > MAX_COMPONENT_LEN
            || component.starts_with(TEMP_PREFIX)
        {
            return Err(format!("but it has the component {component:?}"));
        }
    }
    // std must see the same components, every one of them a plain name:
    // the server hands names to cap-std, which takes them as paths.
    let path = Path::new(name);
    let all_normal = path.components().all(|c| matches!(c, Component::Normal(_)));
    if path.has_root() || !all_normal || path.components().count() != components.len() {
        return Err(format!("but std reads it as {:?}", path.components()));
    }
    check_parts(name, parsed, &components)?;
    check_fits_in_frames(name)
}

/// `file_name` is the last component and `parent` the rest, itself a valid
/// name: the server opens it as the directory to work in.
fn check_parts(name: &str, parsed: &RemoteName, components: &[&str]) -> Result<(), String> {
    let file_name = parsed.file_name();
    if Some(&file_name) != components.last()
        || Some(std::ffi::OsStr::new(file_name)) != Path::new(name).file_name()
    {
        return Err(format!("but its file name is {file_name:?}"));
    }
    match parsed.parent() {
        None if components.len() == 1 => Ok(()),
        Some(parent) if components.len() > 1 => {
            if format!("{parent}/{file_name}") != name
                || Path::new(name).parent() != Some(Path::new(parent))
            {
                return Err(format!("but its parent is {parent:?}"));
            }
            match RemoteName::parse(parent) {
                Ok(valid) if valid.as_str() == parent => Ok(()),
                other => Err(format!("but its parent {parent:?} parses as {other:?}")),
            }
        }
        parent => Err(format!(
            "but its parent is {parent:?} with {} components",
            components.len()
        )),
    }
}

/// "names that pass RemoteName::parse always fit" a frame (PROTOCOL.md §3),
/// two of them in a rename (`MAX_FRAME_LEN`), and come back unchanged.
fn check_fits_in_frames(name: &str) -> Result<(), String> {
    let longest = "n".repeat(MAX_NAME_LEN);
    let requests = [
        Message::Rename {
            from: name.to_owned(),
            to: longest.clone(),
        },
        Message::Rename {
            from: longest,
            to: name.to_owned(),
        },
        Message::Put {
            name: name.to_owned(),
            size: u64::MAX,
        },
        Message::List {
            dir: name.to_owned(),
            long: true,
        },
    ];
    for request in requests {
        let mut frame = Vec::new();
        encode(&request, &mut frame).map_err(|e| format!("but {}: {e}", request.name()))?;
        if decode(&frame) != Ok(Some((request.clone(), frame.len()))) {
            return Err(format!("but {} does not round-trip", request.name()));
        }
    }
    Ok(())
}

/// `typed` as PROTOCOL.md §7 says a server takes it: one trailing `/` and
/// every `.` component dropped.
fn plain_form(typed: &str) -> String {
    let trimmed = typed.strip_suffix('/').unwrap_or(typed);
    let kept: Vec<&str> = trimmed.split('/').filter(|c| *c != ".").collect();
    kept.join("/")
}

/// The rule named by `error` is one that `name` breaks.
fn check_refused(name: &str, error: &NameError) -> Result<(), String> {
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    let mut components = trimmed.split('/');
    let holds = match *error {
        NameError::Empty => name.is_empty(),
        NameError::TooLong(len) => len == name.len() && len > MAX_NAME_LEN,
        NameError::Absolute => name.starts_with('/') && name != "/",
        NameError::Backslash => name.contains('\\'),
        NameError::ControlCharacter => name.chars().any(char::is_control),
        NameError::EmptyComponent => components.any(str::is_empty),
        NameError::DotComponent => components.any(|c| c == ".."),
        NameError::Root => plain_form(name).is_empty(),
        NameError::ComponentTooLong(len) => {
            len > MAX_COMPONENT_LEN && components.any(|c| c.len() == len)
        }
        NameError::Reserved => components.any(|c| c.starts_with(TEMP_PREFIX)),
    };
    if !holds || error.to_string().is_empty() {
        return Err(format!("as {error:?}, a rule it does not break"));
    }
    Ok(())
}
