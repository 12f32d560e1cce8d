//! Why a resumable transfer starts where it does (PROTOCOL.md §5.13).

/// Why the server's answer to a `PutFrom` or a `GetFrom` starts at its
/// offset: from a proven partial, or from the start, and then why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeReason {
    /// There was no partial: the transfer starts from the start.
    New,
    /// A partial was proven: the transfer goes on after it.
    Resumed,
    /// The client asked for the partial to be discarded.
    Restarted,
    /// The partial was discarded: the source's size or modification time
    /// is no longer what it was when the partial was made.
    SourceChanged,
    /// The partial was discarded: its record is missing or damaged, or
    /// does not match the partial.
    Unproven,
    /// A reason this build does not know, from a newer peer.
    Unknown(u8),
}

impl ResumeReason {
    /// What the reason means, for reports.
    pub fn describe(self) -> String {
        match self {
            ResumeReason::New => "there was no partial to resume".to_owned(),
            ResumeReason::Resumed => "resumed from a verified partial".to_owned(),
            ResumeReason::Restarted => "the partial was discarded, as asked".to_owned(),
            ResumeReason::SourceChanged => {
                "the source changed since the partial was made".to_owned()
            }
            ResumeReason::Unproven => "the partial could not be proven".to_owned(),
            ResumeReason::Unknown(code) => {
                format!("for a reason this client does not know ({code})")
            }
        }
    }

    pub(super) fn to_u8(self) -> u8 {
        match self {
            ResumeReason::New => 0,
            ResumeReason::Resumed => 1,
            ResumeReason::Restarted => 2,
            ResumeReason::SourceChanged => 3,
            ResumeReason::Unproven => 4,
            ResumeReason::Unknown(other) => other,
        }
    }

    pub(super) fn from_u8(byte: u8) -> ResumeReason {
        match byte {
            0 => ResumeReason::New,
            1 => ResumeReason::Resumed,
            2 => ResumeReason::Restarted,
            3 => ResumeReason::SourceChanged,
            4 => ResumeReason::Unproven,
            other => ResumeReason::Unknown(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_to_their_bytes_and_back() {
        for byte in 0..=u8::MAX {
            let reason = ResumeReason::from_u8(byte);
            assert_eq!(reason.to_u8(), byte);
            assert_eq!(matches!(reason, ResumeReason::Unknown(_)), byte > 4);
        }
    }

    #[test]
    fn an_unknown_reason_is_described_with_its_number() {
        assert_eq!(
            ResumeReason::Unknown(9).describe(),
            "for a reason this client does not know (9)"
        );
        assert_eq!(
            ResumeReason::SourceChanged.describe(),
            "the source changed since the partial was made"
        );
    }
}
