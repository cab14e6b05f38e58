//! The data model of the four Digest header values: challenges (WWW-Authenticate,
//! Proxy-Authenticate) and credentials (Authorization, Proxy-Authorization).

use super::*;
use std::borrow::Cow;

/// One `name=value` auth-param kept as received (for extensions and other schemes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParam<'a> {
    /// The parameter name, as received.
    pub name: Cow<'a, str>,
    /// The value, unquoted and unescaped.
    pub value: Cow<'a, str>,
    /// Whether it was (and will be written as) a quoted string. A value that is not a token
    /// is always written quoted.
    pub quoted: bool,
}

impl AuthParam<'_> {
    /// Copies borrowed text so the value outlives the input.
    pub fn into_owned(self) -> AuthParam<'static> {
        AuthParam {
            name: own(self.name),
            value: own(self.value),
            quoted: self.quoted,
        }
    }
}

/// A challenge or credentials of a scheme other than Digest, kept raw so that it can be
/// logged, forwarded or refused by the caller rather than failing the parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherAuth<'a> {
    /// The scheme, as received (e.g. `Basic`, `NoOneKnowsThisScheme`).
    pub scheme: Cow<'a, str>,
    /// The RFC 7235 token68 form (`Basic QWxh...==`), when the value has that shape.
    pub token68: Option<Cow<'a, str>>,
    /// The auth-params otherwise.
    pub params: Vec<AuthParam<'a>>,
}

impl OtherAuth<'_> {
    /// The value of the first parameter with this name (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    /// Copies borrowed text so the value outlives the input.
    pub fn into_owned(self) -> OtherAuth<'static> {
        OtherAuth {
            scheme: own(self.scheme),
            token68: self.token68.map(own),
            params: self.params.into_iter().map(AuthParam::into_owned).collect(),
        }
    }
}

pub(super) fn find_param<'p>(params: &'p [AuthParam<'_>], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| &*p.value)
}

/// The value of a WWW-Authenticate or Proxy-Authenticate header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge<'a> {
    /// A Digest challenge.
    Digest(DigestChallenge<'a>),
    /// Any other scheme.
    Other(OtherAuth<'a>),
}

/// The parameters of a Digest challenge (RFC 3261 §25.1 `digest-cln`, RFC 7616 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge<'a> {
    /// The protection space, shown to users and hashed into HA1.
    pub realm: Cow<'a, str>,
    /// Space-separated URIs of the protection space, as sent.
    pub domain: Option<Cow<'a, str>>,
    /// The server nonce.
    pub nonce: Cow<'a, str>,
    /// Opaque data the client echoes back.
    pub opaque: Option<Cow<'a, str>>,
    /// The previous request's nonce was stale: retry without asking the user again.
    pub stale: bool,
    /// The algorithm; `None` means MD5.
    pub algorithm: Option<AlgorithmParam<'a>>,
    /// The qop options offered; empty when the parameter is absent (RFC 2069 mode).
    pub qop: Vec<Qop<'a>>,
    /// The `charset` parameter (RFC 7616: only `UTF-8`).
    pub charset: Option<Cow<'a, str>>,
    /// The server supports hashed usernames (RFC 7616 §3.4.4).
    pub userhash: bool,
    /// Other parameters, kept as received.
    pub other: Vec<AuthParam<'a>>,
}

/// The value of an Authorization or Proxy-Authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// Digest credentials.
    Digest(DigestCredentials<'a>),
    /// Any other scheme, e.g. `NoOneKnowsThisScheme opaque-data=here`.
    Other(OtherAuth<'a>),
}

/// The parameters of Digest credentials (RFC 3261 §25.1 `dig-resp`, RFC 7616 §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials<'a> {
    /// The username, or its hash when `userhash` is true.
    pub username: Cow<'a, str>,
    /// The realm answered.
    pub realm: Cow<'a, str>,
    /// The server nonce answered.
    pub nonce: Cow<'a, str>,
    /// The digest-uri: the Request-URI as the client sent it.
    pub uri: Cow<'a, str>,
    /// The response, in hex.
    pub response: Cow<'a, str>,
    /// The algorithm; `None` means MD5.
    pub algorithm: Option<AlgorithmParam<'a>>,
    /// The client nonce (present with a qop).
    pub cnonce: Option<Cow<'a, str>>,
    /// The challenge's opaque, echoed.
    pub opaque: Option<Cow<'a, str>>,
    /// The qop chosen (absent in RFC 2069 mode).
    pub qop: Option<Qop<'a>>,
    /// The nonce count (present with a qop).
    pub nc: Option<u32>,
    /// The username is H(username:realm).
    pub userhash: bool,
    /// Other parameters, kept as received.
    pub other: Vec<AuthParam<'a>>,
}

pub(super) fn own(c: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(c.into_owned())
}

impl<'a> Challenge<'a> {
    /// Parses one WWW-Authenticate / Proxy-Authenticate value (without the header name).
    pub fn parse(value: &'a str) -> Result<Challenge<'a>, AuthError> {
        let mut lx = Lexer::new(value);
        let (scheme, body) = parse_item(&mut lx, false)?;
        build_challenge(scheme, body)
    }

    /// Parses a value that may hold several challenges separated by commas, as HTTP allows
    /// and as some stacks produce when they join repeated headers with ", ".
    pub fn parse_list(value: &'a str) -> Result<Vec<Challenge<'a>>, AuthError> {
        let mut lx = Lexer::new(value);
        let mut out = Vec::new();
        loop {
            lx.skip_lws_and_commas();
            if lx.at_end() {
                break;
            }
            let (scheme, body) = parse_item(&mut lx, true)?;
            out.push(build_challenge(scheme, body)?);
        }
        if out.is_empty() {
            return Err(AuthError::MissingScheme { at: value.len() });
        }
        Ok(out)
    }

    /// A Digest challenge as this server issues them: with `qop="auth"` (RFC 3261 §22.4
    /// asks servers to offer a qop, and without one nonce counts cannot stop replays) and an
    /// explicit algorithm. Clear `qop` on the result for RFC 2069 peers.
    pub fn digest(
        realm: impl Into<Cow<'a, str>>,
        nonce: impl Into<Cow<'a, str>>,
        algorithm: Algorithm,
        opaque: Option<Cow<'a, str>>,
        stale: bool,
    ) -> Challenge<'a> {
        Challenge::Digest(DigestChallenge {
            realm: realm.into(),
            domain: None,
            nonce: nonce.into(),
            opaque,
            stale,
            algorithm: Some(AlgorithmParam::Known(algorithm)),
            qop: vec![Qop::Auth],
            charset: None,
            userhash: false,
            other: Vec::new(),
        })
    }

    /// The two challenges RFC 8760 §2.4 wants offered together, in order of preference:
    /// SHA-256 first, then MD5 for older clients ([`Algorithm::OFFERED`]); same nonce, each
    /// with `qop="auth"`.
    pub fn digest_pair(
        realm: impl Into<Cow<'a, str>>,
        nonce: impl Into<Cow<'a, str>>,
        opaque: Option<Cow<'a, str>>,
        stale: bool,
    ) -> [Challenge<'a>; 2] {
        let realm = realm.into();
        let nonce = nonce.into();
        Algorithm::OFFERED
            .map(|alg| Challenge::digest(realm.clone(), nonce.clone(), alg, opaque.clone(), stale))
    }

    /// The scheme, e.g. `Digest`.
    pub fn scheme(&self) -> &str {
        match self {
            Challenge::Digest(_) => "Digest",
            Challenge::Other(o) => &o.scheme,
        }
    }

    /// The Digest parameters, if this is a Digest challenge.
    pub fn as_digest(&self) -> Option<&DigestChallenge<'a>> {
        match self {
            Challenge::Digest(d) => Some(d),
            Challenge::Other(_) => None,
        }
    }

    /// Copies borrowed text so the value outlives the input.
    pub fn into_owned(self) -> Challenge<'static> {
        match self {
            Challenge::Digest(d) => Challenge::Digest(d.into_owned()),
            Challenge::Other(o) => Challenge::Other(o.into_owned()),
        }
    }
}

impl DigestChallenge<'_> {
    /// The algorithm to compute: MD5 when absent, `None` when unsupported.
    pub fn algorithm(&self) -> Option<Algorithm> {
        effective_algorithm(self.algorithm.as_ref())
    }

    /// The URIs of the `domain` parameter.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domain
            .as_deref()
            .unwrap_or("")
            .split([' ', '\t'])
            .filter(|s| !s.is_empty())
    }

    /// Copies borrowed text so the value outlives the input.
    pub fn into_owned(self) -> DigestChallenge<'static> {
        DigestChallenge {
            realm: own(self.realm),
            domain: self.domain.map(own),
            nonce: own(self.nonce),
            opaque: self.opaque.map(own),
            stale: self.stale,
            algorithm: self.algorithm.map(AlgorithmParam::into_owned),
            qop: self.qop.into_iter().map(Qop::into_owned).collect(),
            charset: self.charset.map(own),
            userhash: self.userhash,
            other: self.other.into_iter().map(AuthParam::into_owned).collect(),
        }
    }
}

impl<'a> Credentials<'a> {
    /// Parses one Authorization / Proxy-Authorization value (without the header name).
    pub fn parse(value: &'a str) -> Result<Credentials<'a>, AuthError> {
        let mut lx = Lexer::new(value);
        let (scheme, body) = parse_item(&mut lx, false)?;
        match body {
            Body::Params(params) if scheme.eq_ignore_ascii_case("digest") => {
                digest_credentials(params).map(Credentials::Digest)
            }
            body => Ok(Credentials::Other(other_auth(scheme, body))),
        }
    }

    /// The scheme, e.g. `Digest`.
    pub fn scheme(&self) -> &str {
        match self {
            Credentials::Digest(_) => "Digest",
            Credentials::Other(o) => &o.scheme,
        }
    }

    /// The Digest parameters, if these are Digest credentials.
    pub fn as_digest(&self) -> Option<&DigestCredentials<'a>> {
        match self {
            Credentials::Digest(d) => Some(d),
            Credentials::Other(_) => None,
        }
    }

    /// Copies borrowed text so the value outlives the input.
    pub fn into_owned(self) -> Credentials<'static> {
        match self {
            Credentials::Digest(d) => Credentials::Digest(d.into_owned()),
            Credentials::Other(o) => Credentials::Other(o.into_owned()),
        }
    }
}

impl DigestCredentials<'_> {
    /// The algorithm to compute: MD5 when absent, `None` when unsupported.
    pub fn algorithm(&self) -> Option<Algorithm> {
        effective_algorithm(self.algorithm.as_ref())
    }

    /// Copies borrowed text so the value outlives the input.
    pub fn into_owned(self) -> DigestCredentials<'static> {
        DigestCredentials {
            username: own(self.username),
            realm: own(self.realm),
            nonce: own(self.nonce),
            uri: own(self.uri),
            response: own(self.response),
            algorithm: self.algorithm.map(AlgorithmParam::into_owned),
            cnonce: self.cnonce.map(own),
            opaque: self.opaque.map(own),
            qop: self.qop.map(Qop::into_owned),
            nc: self.nc,
            userhash: self.userhash,
            other: self.other.into_iter().map(AuthParam::into_owned).collect(),
        }
    }
}
