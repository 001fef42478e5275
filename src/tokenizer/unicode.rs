//! Codepoint classes for the pre-tokenizers and GPT-2's byte-to-unicode alphabet.

use super::unicode_data::CATEGORY_RANGES;

/// Codepoint class bits; the layout follows llama.cpp's `unicode_cpt_flags` so the splitters
/// read like the regexes they stand for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags(pub u16);

impl Flags {
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const CATEGORIES: u16 = 0x00FF;
    pub const WHITESPACE: u16 = 0x0100;

    /// Flags of a codepoint past the end of the fragment: no class at all, which is what
    /// stops every `+` loop at a fragment boundary.
    pub const NONE: Flags = Flags(0);

    pub fn of(c: char) -> Flags {
        let cp = c as u32;
        // The table's first entry starts at 0, so the partition point is at least 1.
        let i = CATEGORY_RANGES.partition_point(|&(start, _)| start <= cp);
        let mut bits = CATEGORY_RANGES[i - 1].1 as u16;
        // Unicode White_Space, the set llama.cpp uses for `\s`.
        if c.is_whitespace() {
            bits |= Self::WHITESPACE;
        }
        Flags(bits)
    }

    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    pub fn category(self) -> u16 {
        self.0 & Self::CATEGORIES
    }
    /// Inside the fragment (any codepoint has at least one bit).
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
}

/// GPT-2's reversible byte-to-character map: printable Latin-1 bytes stand for themselves,
/// the rest are shifted to U+0100 onwards so that no byte becomes whitespace or a control.
pub(crate) struct ByteAlphabet {
    to_char: [char; 256],
    to_byte: [Option<u8>; 0x144],
}

impl ByteAlphabet {
    pub fn new() -> ByteAlphabet {
        let mut to_char = ['\0'; 256];
        let mut to_byte = [None; 0x144];
        let mut n = 0u32;
        for b in 0..=255u8 {
            let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
            let cp = if printable {
                b as u32
            } else {
                n += 1;
                255 + n
            };
            to_char[b as usize] = char::from_u32(cp).unwrap_or('\0');
            to_byte[cp as usize] = Some(b);
        }
        ByteAlphabet { to_char, to_byte }
    }

    /// The character standing for byte `b`.
    pub fn char_of(&self, b: u8) -> char {
        self.to_char[b as usize]
    }

    /// The byte that `c` stands for; `None` outside the alphabet.
    pub fn byte_of(&self, c: char) -> Option<u8> {
        self.to_byte.get(c as usize).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_round_trips() {
        let t = ByteAlphabet::new();
        for b in 0..=255u8 {
            assert_eq!(t.byte_of(t.char_of(b)), Some(b));
        }
        assert_eq!(t.char_of(b' '), 'Ġ');
        assert_eq!(t.char_of(b'\n'), 'Ċ');
        assert_eq!(t.byte_of('\u{144}'), None);
        assert_eq!(t.byte_of('\u{20}'), None);
    }

    #[test]
    fn classes() {
        assert!(Flags::of('a').is_letter());
        assert!(Flags::of('é').is_letter());
        assert!(Flags::of('7').is_number());
        assert!(Flags::of('\u{3000}').is_whitespace());
        assert_eq!(Flags::of('!').category(), Flags::PUNCTUATION);
        // Unassigned in Unicode 15.1, llama.cpp's table version.
        assert_eq!(Flags::of('\u{1C89}').category(), 0x0001);
    }
}
