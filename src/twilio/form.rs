//! The parameters of Twilio's webhooks: `application/x-www-form-urlencoded` bodies (WHATWG URL
//! Standard §5.1), decoded into name/value pairs in their original order, duplicates kept (the
//! signature covers every pair).

/// Why a form body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("form body is not UTF-8 after percent-decoding")]
    NotUtf8,
    #[error("form body has more than {0} parameters")]
    TooMany(usize),
}

/// Most parameters taken from one body; Twilio sends about 20.
const MAX_PARAMS: usize = 256;

/// Decodes a form body. Malformed percent escapes are kept literally, as browsers do.
pub fn parse(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut params = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        if params.len() == MAX_PARAMS {
            return Err(FormError::TooMany(MAX_PARAMS));
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (
                pair.get(..i).unwrap_or_default(),
                pair.get(i + 1..).unwrap_or_default(),
            ),
            None => (pair, &[][..]),
        };
        params.push((decode(name)?, decode(value)?));
    }
    Ok(params)
}

/// The first value of `name`.
pub fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn decode(raw: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_percent_escapes_keeping_order_and_duplicates() {
        let p =
            parse(b"From=%2B15551234567&To=1000&Caller=a+b&Digits=1&Digits=2&empty=&flag").unwrap();
        assert_eq!(get(&p, "From"), Some("+15551234567"));
        assert_eq!(get(&p, "Caller"), Some("a b"));
        assert_eq!(p.iter().filter(|(k, _)| k == "Digits").count(), 2);
        assert_eq!(get(&p, "empty"), Some(""));
        assert_eq!(get(&p, "flag"), Some(""));
    }

    #[test]
    fn bad_escapes_stay_literal_and_bad_utf8_is_refused() {
        assert_eq!(
            parse(b"a=%zz%4").unwrap(),
            [("a".to_owned(), "%zz%4".to_owned())]
        );
        assert_eq!(parse(b"a=%ff"), Err(FormError::NotUtf8));
        assert_eq!(
            parse(&b"a=1&".repeat(300)),
            Err(FormError::TooMany(MAX_PARAMS))
        );
    }
}
