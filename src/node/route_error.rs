//! Why a signal was not delivered, and the one place that turns each
//! reason into its ERROR code and sentence. The router, the inbox and the
//! session all answer a failed signal through this type.

use crate::protocol::ErrorCode;

use super::outbox::DeliverError;

/// A signal that could not be delivered; the sender gets ERROR with the
/// signal's id and [`RouteError::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    /// The target is not online anywhere.
    #[error("target client is not online")]
    NotFound,
    /// The target's node (or its outbound queue) did not take the signal.
    #[error("target client's node could not take the signal")]
    Unreachable,
    /// Redis could not be reached for a cross-node route.
    #[error("cluster backend unavailable for a cross-node route")]
    Unavailable,
    /// The signal exceeds the frame limit once translated for the receiver.
    #[error("signal too large once translated for the receiver")]
    TooLarge,
}

impl RouteError {
    /// The ERROR code the sender gets.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            RouteError::NotFound => ErrorCode::PeerNotFound,
            RouteError::Unreachable => ErrorCode::PeerUnreachable,
            RouteError::Unavailable => ErrorCode::Unavailable,
            RouteError::TooLarge => ErrorCode::BadPayload,
        }
    }

    /// The reason a code received from another node stands for (an
    /// unexpected code counts as unreachable).
    pub(crate) fn from_code(code: &str) -> RouteError {
        match ErrorCode::parse(code) {
            Some(ErrorCode::PeerNotFound) => RouteError::NotFound,
            Some(ErrorCode::Unavailable) => RouteError::Unavailable,
            Some(ErrorCode::BadPayload) => RouteError::TooLarge,
            _ => RouteError::Unreachable,
        }
    }
}

impl From<DeliverError> for RouteError {
    fn from(error: DeliverError) -> RouteError {
        match error {
            DeliverError::Full => RouteError::Unreachable,
            DeliverError::Closed => RouteError::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_survives_the_trip_through_its_code() {
        for reason in [
            RouteError::NotFound,
            RouteError::Unreachable,
            RouteError::Unavailable,
            RouteError::TooLarge,
        ] {
            assert_eq!(RouteError::from_code(reason.code().as_str()), reason);
        }
        assert_eq!(RouteError::from_code("NONSENSE"), RouteError::Unreachable);
    }
}
