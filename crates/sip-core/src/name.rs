//! Header field names: the ones Switchboard reads by name, with their compact forms
//! (RFC 3261 §7.3.3 and later RFCs), recognised case-insensitively once, when the
//! message is indexed, so later look-ups compare a small enum instead of strings.

macro_rules! header_names {
    ($( $variant:ident => $canon:literal, $lower:literal $(, $compact:literal)? ;)*) => {
        /// A header field name. `Other` is any name not listed; its text stays in the message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HeaderName {
            $( #[doc = $canon] $variant, )*
            /// A header this crate has no variant for.
            Other,
        }

        impl HeaderName {
            /// The canonical (long) spelling, or `None` for `Other`.
            pub fn as_str(&self) -> Option<&'static str> {
                match self {
                    $( HeaderName::$variant => Some($canon), )*
                    HeaderName::Other => None,
                }
            }

            /// Recognises a name, long or compact, in any letter case.
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                if name.len() == 1 {
                    return match name[0].to_ascii_lowercase() {
                        $( $( $compact => HeaderName::$variant, )? )*
                        _ => HeaderName::Other,
                    };
                }
                // Longest known name is "Proxy-Authorization" (19); "Subscription-State" 18.
                let mut buf = [0u8; 24];
                let Some(lower) = buf.get_mut(..name.len()) else {
                    return HeaderName::Other;
                };
                for (d, s) in lower.iter_mut().zip(name) {
                    *d = s.to_ascii_lowercase();
                }
                match &*lower {
                    $( $lower => HeaderName::$variant, )*
                    _ => HeaderName::Other,
                }
            }
        }
    };
}

header_names! {
    Accept => "Accept", b"accept";
    AcceptContact => "Accept-Contact", b"accept-contact", b'a';
    AcceptEncoding => "Accept-Encoding", b"accept-encoding";
    AcceptLanguage => "Accept-Language", b"accept-language";
    AlertInfo => "Alert-Info", b"alert-info";
    Allow => "Allow", b"allow";
    AllowEvents => "Allow-Events", b"allow-events", b'u';
    AuthenticationInfo => "Authentication-Info", b"authentication-info";
    Authorization => "Authorization", b"authorization";
    CallId => "Call-ID", b"call-id", b'i';
    CallInfo => "Call-Info", b"call-info";
    Contact => "Contact", b"contact", b'm';
    ContentDisposition => "Content-Disposition", b"content-disposition";
    ContentEncoding => "Content-Encoding", b"content-encoding", b'e';
    ContentLanguage => "Content-Language", b"content-language";
    ContentLength => "Content-Length", b"content-length", b'l';
    ContentType => "Content-Type", b"content-type", b'c';
    CSeq => "CSeq", b"cseq";
    Date => "Date", b"date";
    ErrorInfo => "Error-Info", b"error-info";
    Event => "Event", b"event", b'o';
    Expires => "Expires", b"expires";
    From => "From", b"from", b'f';
    Identity => "Identity", b"identity", b'y';
    InReplyTo => "In-Reply-To", b"in-reply-to";
    MaxForwards => "Max-Forwards", b"max-forwards";
    MimeVersion => "MIME-Version", b"mime-version";
    MinExpires => "Min-Expires", b"min-expires";
    MinSe => "Min-SE", b"min-se";
    Organization => "Organization", b"organization";
    Path => "Path", b"path";
    Priority => "Priority", b"priority";
    ProxyAuthenticate => "Proxy-Authenticate", b"proxy-authenticate";
    ProxyAuthorization => "Proxy-Authorization", b"proxy-authorization";
    ProxyRequire => "Proxy-Require", b"proxy-require";
    RAck => "RAck", b"rack";
    RecordRoute => "Record-Route", b"record-route";
    ReferTo => "Refer-To", b"refer-to", b'r';
    ReferredBy => "Referred-By", b"referred-by", b'b';
    RejectContact => "Reject-Contact", b"reject-contact", b'j';
    ReplyTo => "Reply-To", b"reply-to";
    RequestDisposition => "Request-Disposition", b"request-disposition", b'd';
    Require => "Require", b"require";
    RetryAfter => "Retry-After", b"retry-after";
    Route => "Route", b"route";
    RSeq => "RSeq", b"rseq";
    Server => "Server", b"server";
    SessionExpires => "Session-Expires", b"session-expires", b'x';
    Subject => "Subject", b"subject", b's';
    SubscriptionState => "Subscription-State", b"subscription-state";
    Supported => "Supported", b"supported", b'k';
    Timestamp => "Timestamp", b"timestamp";
    To => "To", b"to", b't';
    Unsupported => "Unsupported", b"unsupported";
    UserAgent => "User-Agent", b"user-agent";
    Via => "Via", b"via", b'v';
    Warning => "Warning", b"warning";
    WwwAuthenticate => "WWW-Authenticate", b"www-authenticate";
}

impl HeaderName {
    /// The canonical name, or "extension" for a header without a variant: for messages.
    pub fn label(&self) -> &'static str {
        self.as_str().unwrap_or("extension")
    }

    /// Whether RFC 3261 allows this header only once in a message (§20, and §7.3.1: only
    /// comma-list headers may repeat).
    pub fn is_single(&self) -> bool {
        matches!(
            self,
            HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::From
                | HeaderName::To
                | HeaderName::MaxForwards
                | HeaderName::ContentLength
                | HeaderName::ContentType
                | HeaderName::Expires
                | HeaderName::MinExpires
                | HeaderName::RSeq
                | HeaderName::RAck
                | HeaderName::SessionExpires
                | HeaderName::Event
        )
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName;

    #[test]
    fn long_compact_and_case() {
        assert_eq!(HeaderName::from_bytes(b"via"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"cAlL-iD"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"i"), HeaderName::CallId);
        assert_eq!(
            HeaderName::from_bytes(b"Proxy-Authorization"),
            HeaderName::ProxyAuthorization
        );
        assert_eq!(HeaderName::from_bytes(b"X-Custom"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(&[b'a'; 40]), HeaderName::Other);
        assert_eq!(HeaderName::CallId.as_str(), Some("Call-ID"));
    }
}
