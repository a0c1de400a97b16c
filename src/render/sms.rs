//! How an SMS body is encoded and into how many parts it splits: GSM-7 (the GSM 03.38 basic
//! set, extension characters taking two septets) when every character fits, else UCS-2.

/// GSM 03.38 basic character set (without the escape code).
const GSM7_BASIC: &str =
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table: each costs an escape plus the character.
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{c}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gsm7 => "GSM7",
            Self::Ucs2 => "UCS2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsShape {
    pub encoding: Encoding,
    /// Characters as the network counts them: septets for GSM-7, UTF-16 units for UCS-2.
    pub units: usize,
    pub parts: usize,
}

/// The encoding, length and number of parts of an SMS body (single messages carry 160
/// septets or 70 UCS-2 units; concatenated parts 153 or 67).
pub fn shape(body: &str) -> SmsShape {
    let mut septets = 0;
    for c in body.chars() {
        if GSM7_BASIC.contains(c) {
            septets += 1;
        } else if GSM7_EXTENSION.contains(c) {
            septets += 2;
        } else {
            let units = body.encode_utf16().count();
            return SmsShape { encoding: Encoding::Ucs2, units, parts: parts(units, 70, 67) };
        }
    }
    SmsShape { encoding: Encoding::Gsm7, units: septets, parts: parts(septets, 160, 153) }
}

fn parts(units: usize, single: usize, each: usize) -> usize {
    if units == 0 {
        0
    } else if units <= single {
        1
    } else {
        units.div_ceil(each)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_and_ucs2_are_told_apart_and_split() {
        assert_eq!(shape("Hello, your code is 123456."), SmsShape { encoding: Encoding::Gsm7, units: 27, parts: 1 });
        assert_eq!(shape(&"a".repeat(160)).parts, 1);
        assert_eq!(shape(&"a".repeat(161)).parts, 2);
        assert_eq!(shape(&"a".repeat(306)).parts, 2);
        assert_eq!(shape(&"a".repeat(307)).parts, 3);
        assert_eq!(shape("€10 [ok]").units, 11);
        let emoji = shape("Hi 👋");
        assert_eq!((emoji.encoding, emoji.units, emoji.parts), (Encoding::Ucs2, 5, 1));
        assert_eq!(shape(&"ж".repeat(71)).parts, 2);
        assert_eq!(shape("").parts, 0);
    }
}
