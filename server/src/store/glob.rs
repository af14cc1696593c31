//! Redis's glob-style pattern matching (`stringmatchlen`): `*`, `?`,
//! `[abc]`, `[^a]`, `[a-z]` and `\` escapes. Used by KEYS, SCAN MATCH and
//! CONFIG GET. Recursion on `*` is bounded (Redis limits nesting too) so a
//! hostile pattern cannot exhaust the stack.

const NESTING_MAX: usize = 1000;

pub fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    if text.is_empty() {
        return pattern.iter().all(|&c| c == b'*');
    }
    let mut skip_longer = false;
    matches(pattern, text, nocase, 0, &mut skip_longer)
}

fn eq(a: u8, b: u8, nocase: bool) -> bool {
    if nocase { a.eq_ignore_ascii_case(&b) } else { a == b }
}

fn matches(mut p: &[u8], mut s: &[u8], nocase: bool, depth: usize, skip_longer: &mut bool) -> bool {
    if depth > NESTING_MAX {
        return false;
    }
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                for i in 0..s.len() {
                    if matches(&p[1..], &s[i..], nocase, depth + 1, skip_longer) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                p = &p[1..];
                let not = p.first() == Some(&b'^');
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    match p {
                        [] => break,
                        [b'\\', c, ..] => {
                            if *c == s[0] {
                                matched = true;
                            }
                            p = &p[2..];
                        }
                        [b']', ..] => break,
                        [a, b'-', b, ..] if *b != b']' => {
                            let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
                            let c = s[0];
                            let (lo, hi, c) = if nocase {
                                (lo.to_ascii_lowercase(), hi.to_ascii_lowercase(), c.to_ascii_lowercase())
                            } else {
                                (lo, hi, c)
                            };
                            if c >= lo && c <= hi {
                                matched = true;
                            }
                            p = &p[3..];
                        }
                        [c, ..] => {
                            if eq(*c, s[0], nocase) {
                                matched = true;
                            }
                            p = &p[1..];
                        }
                    }
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s = &s[1..];
                if p.is_empty() {
                    // Unterminated class: Redis treats the end as a match end.
                    return s.is_empty();
                }
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if !eq(p[0], s[0], nocase) {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if !eq(c, s[0], nocase) {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn redis_examples() {
        let yes: &[(&[u8], &[u8])] = &[
            (b"*", b"anything"),
            (b"*", b""),
            (b"h?llo", b"hello"),
            (b"h*llo", b"heeeello"),
            (b"h[ae]llo", b"hallo"),
            (b"h[^e]llo", b"hallo"),
            (b"h[a-b]llo", b"hbllo"),
            (b"key:*", b"key:1"),
            (b"a\\*b", b"a*b"),
            (b"*a*b*", b"xxaxxbxx"),
        ];
        let no: &[(&[u8], &[u8])] = &[
            (b"h?llo", b"hllo"),
            (b"h[ae]llo", b"hillo"),
            (b"h[^e]llo", b"hello"),
            (b"key:*", b"ke"),
            (b"a\\*b", b"axb"),
            (b"", b"a"),
        ];
        for (p, s) in yes {
            assert!(glob_match(p, s, false), "{:?} {:?}", String::from_utf8_lossy(p), String::from_utf8_lossy(s));
        }
        for (p, s) in no {
            assert!(!glob_match(p, s, false), "{:?} {:?}", String::from_utf8_lossy(p), String::from_utf8_lossy(s));
        }
        assert!(glob_match(b"MAXMEM*", b"maxmemory", true));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let p = b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let s = vec![b'a'; 100];
        assert!(!glob_match(p, &s, false));
    }
}
