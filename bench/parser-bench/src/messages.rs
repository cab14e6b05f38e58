//! The benchmark messages, compiled in so that the benchmark, the tests and the
//! allocation report read exactly the same bytes.

use bytes::Bytes;

/// One test message.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Short name: the criterion group and the README row.
    pub name: &'static str,
    /// What it is and who sends it.
    pub about: &'static str,
    /// The message as on the wire.
    pub bytes: &'static [u8],
}

impl Sample {
    /// The message as a `Bytes`. `from_static` so that cloning it (as a receive path
    /// hands out a shared buffer) neither allocates nor skews the allocation count.
    pub fn buf(&self) -> Bytes {
        Bytes::from_static(self.bytes)
    }
}

/// Every message, in the order of the README table.
pub const ALL: [Sample; 5] = [
    Sample {
        name: "invite",
        about: "INVITE from Linphone via an edge proxy: SDP body, 2 Via, Record-Route, 2 Route",
        bytes: include_bytes!("../messages/invite.sip"),
    },
    Sample {
        name: "ok200",
        about: "200 OK to that INVITE from a Yealink: SDP body, 3 Via, 2 Record-Route",
        bytes: include_bytes!("../messages/ok200.sip"),
    },
    Sample {
        name: "register",
        about: "REGISTER from a Yealink with a digest Authorization",
        bytes: include_bytes!("../messages/register.sip"),
    },
    Sample {
        name: "bye",
        about: "in-dialog BYE from baresip with 2 Route",
        bytes: include_bytes!("../messages/bye.sip"),
    },
    Sample {
        name: "subscribe20",
        about: "SUBSCRIBE (BLF) from a Yealink via an edge proxy: 20 header lines",
        bytes: include_bytes!("../messages/subscribe20.sip"),
    },
];
