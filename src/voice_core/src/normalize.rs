//! Text normalization before phonemization, for what robots say: numbers,
//! decimals, units, percentages, degrees, times and common abbreviations are
//! spelled out ("2.5 m" -> "two point five meters"). Control characters and
//! symbols no voice can say (emoji) are dropped.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// Spells out a non-negative integer ("one hundred twenty three").
pub fn number_words(n: u64) -> String {
    fn below_thousand(n: u64, out: &mut Vec<String>) {
        let (h, r) = (n / 100, n % 100);
        if h > 0 {
            out.push(ONES[h as usize].into());
            out.push("hundred".into());
        }
        if r >= 20 {
            let t = TENS[(r / 10) as usize];
            if r % 10 == 0 {
                out.push(t.into());
            } else {
                out.push(format!("{t}-{}", ONES[(r % 10) as usize]));
            }
        } else if r > 0 || h == 0 {
            out.push(ONES[r as usize].into());
        }
    }
    if n == 0 {
        return "zero".into();
    }
    const SCALES: [(u64, &str); 6] = [
        (1_000_000_000_000_000_000, "quintillion"),
        (1_000_000_000_000_000, "quadrillion"),
        (1_000_000_000_000, "trillion"),
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ];
    let mut out = Vec::new();
    let mut rest = n;
    for (scale, name) in SCALES {
        if rest >= scale {
            below_thousand(rest / scale, &mut out);
            out.push(name.into());
            rest %= scale;
        }
    }
    if rest > 0 {
        below_thousand(rest, &mut out);
    }
    out.join(" ")
}

/// Spells a digit string one digit at a time ("05" -> "zero five").
fn digits_words(d: &str) -> String {
    d.chars()
        .filter_map(|c| c.to_digit(10))
        .map(|v| ONES[v as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Spells a decimal number as written ("-2.50" -> "minus two point five zero").
fn decimal_words(s: &str) -> String {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let mut parts = s.splitn(2, '.');
    let int = parts.next().unwrap_or("").replace(',', "");
    let frac = parts.next();
    let mut out = String::new();
    if neg {
        out.push_str("minus ");
    }
    match int.parse::<u64>() {
        Ok(v) if int.len() <= 18 => out.push_str(&number_words(v)),
        _ => out.push_str(&digits_words(&int)),
    }
    if let Some(f) = frac.filter(|f| !f.is_empty()) {
        out.push_str(" point ");
        out.push_str(&digits_words(f));
    }
    out
}

/// Unit symbols after a number, longest first: (symbol, singular, plural).
const UNITS: &[(&str, &str, &str)] = &[
    ("km/h", "kilometer per hour", "kilometers per hour"),
    ("m/s", "meter per second", "meters per second"),
    ("mph", "mile per hour", "miles per hour"),
    ("°C", "degree Celsius", "degrees Celsius"),
    ("°F", "degree Fahrenheit", "degrees Fahrenheit"),
    ("km", "kilometer", "kilometers"),
    ("cm", "centimeter", "centimeters"),
    ("mm", "millimeter", "millimeters"),
    ("kg", "kilogram", "kilograms"),
    ("mAh", "milliamp hour", "milliamp hours"),
    ("ms", "millisecond", "milliseconds"),
    ("Hz", "hertz", "hertz"),
    ("kW", "kilowatt", "kilowatts"),
    ("h", "hour", "hours"),
    ("m", "meter", "meters"),
    ("s", "second", "seconds"),
    ("g", "gram", "grams"),
    ("V", "volt", "volts"),
    ("W", "watt", "watts"),
    ("A", "amp", "amps"),
    ("%", "percent", "percent"),
    ("°", "degree", "degrees"),
];

/// Abbreviations spelled out (matched as whole words, case-sensitive).
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("e.g.", "for example"),
    ("i.e.", "that is"),
    ("etc.", "et cetera"),
    ("vs.", "versus"),
    ("Dr.", "Doctor"),
    ("Mr.", "Mister"),
    ("Mrs.", "Missus"),
    ("Ms.", "Miz"),
    ("St.", "Saint"),
    ("No.", "number"),
    ("approx.", "approximately"),
    ("min.", "minutes"),
    ("ROS", "ross"),
    ("&", "and"),
];

/// Spells out everything in `text` a voice would otherwise say wrong.
pub fn normalize(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|&c| is_speakable(c))
        .collect();
    let mut out = String::with_capacity(clean.len() + 16);
    let chars: Vec<char> = clean.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // abbreviations at a word start
        if i == 0 || !chars[i - 1].is_alphanumeric() {
            if let Some((abbr, words)) = ABBREVIATIONS
                .iter()
                .find(|(a, _)| starts_with_word(&chars[i..], a))
            {
                out.push_str(words);
                i += abbr.chars().count();
                continue;
            }
        }
        // times: 7:30, 14:05 (optionally am/pm)
        if c.is_ascii_digit() && (i == 0 || !chars[i - 1].is_alphanumeric()) {
            if let Some((words, used)) = time_at(&chars[i..]) {
                out.push_str(&words);
                i += used;
                continue;
            }
        }
        // numbers, with sign, decimals, thousands separators and a unit
        let neg = c == '-'
            && chars.get(i + 1).is_some_and(char::is_ascii_digit)
            && (i == 0 || chars[i - 1] == ' ');
        if (c.is_ascii_digit() && (i == 0 || !chars[i - 1].is_alphabetic())) || neg {
            let start = i;
            let mut j = if neg { i + 1 } else { i };
            while j < chars.len()
                && (chars[j].is_ascii_digit()
                    || ((chars[j] == '.' || chars[j] == ',')
                        && chars.get(j + 1).is_some_and(char::is_ascii_digit)))
            {
                j += 1;
            }
            let num: String = chars[start..j].iter().collect();
            // a comma group that is not a thousands separator ends the number
            let num_clean = if num.contains(',') && !is_thousands(&num) {
                let cut = num.find(',').unwrap_or(num.len());
                j = start + num[..cut].chars().count();
                num[..cut].to_string()
            } else {
                num
            };
            out.push_str(&decimal_words(&num_clean));
            // unit right after the number, with or without a space
            let mut k = j;
            while k < chars.len() && chars[k] == ' ' {
                k += 1;
            }
            let singular = num_clean.trim_start_matches('-') == "1";
            if let Some((sym, one, many)) = UNITS.iter().find(|(s, ..)| unit_at(&chars[k..], s)) {
                out.push(' ');
                out.push_str(if singular { one } else { many });
                i = k + sym.chars().count();
            } else {
                if chars.get(j).is_some_and(|c| c.is_alphabetic()) {
                    out.push(' ');
                }
                i = j;
            }
            continue;
        }
        match c {
            '%' => out.push_str(" percent"),
            '°' => out.push_str(" degrees"),
            '+' => out.push_str(" plus "),
            '=' => out.push_str(" equals "),
            '@' => out.push_str(" at "),
            '#' | '*' | '_' | '~' | '^' | '|' | '\\' | '<' | '>' | '{' | '}' | '[' | ']' => {
                out.push(' ')
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_speakable(c: char) -> bool {
    // letters, digits and punctuation of any script; drop emoji and pictographs
    !matches!(c as u32,
        0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0xFE00..=0xFE0F | 0xE0000..=0xE007F | 0x200D)
}

fn starts_with_word(chars: &[char], word: &str) -> bool {
    let w: Vec<char> = word.chars().collect();
    chars.len() >= w.len()
        && chars[..w.len()] == w[..]
        && chars
            .get(w.len())
            .is_none_or(|c| !c.is_alphanumeric() || word.ends_with('.'))
}

fn unit_at(chars: &[char], sym: &str) -> bool {
    let s: Vec<char> = sym.chars().collect();
    chars.len() >= s.len()
        && chars[..s.len()] == s[..]
        && chars.get(s.len()).is_none_or(|c| !c.is_alphanumeric())
}

fn is_thousands(num: &str) -> bool {
    let int = num.trim_start_matches('-').split('.').next().unwrap_or("");
    let groups: Vec<&str> = int.split(',').collect();
    groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups[1..].iter().all(|g| g.len() == 3)
}

/// "7:30" -> "seven thirty", "14:05" -> "fourteen oh five", "9:00 am" -> "nine a m".
fn time_at(chars: &[char]) -> Option<(String, usize)> {
    let s: String = chars.iter().take(12).collect();
    let b = s.as_bytes();
    let h_len = if b.len() > 1 && b[1] == b':' {
        1
    } else if b.len() > 2 && b[2] == b':' {
        2
    } else {
        return None;
    };
    let m = s.get(h_len + 1..h_len + 3)?;
    if !m.chars().all(|c| c.is_ascii_digit())
        || s[h_len + 3..].starts_with(|c: char| c.is_ascii_digit())
    {
        return None;
    }
    let h: u64 = s[..h_len].parse().ok()?;
    let mm: u64 = m.parse().ok()?;
    if h > 23 || mm > 59 {
        return None;
    }
    let mut words = number_words(h);
    match mm {
        0 => {}
        1..=9 => words.push_str(&format!(" oh {}", number_words(mm))),
        _ => words.push_str(&format!(" {}", number_words(mm))),
    }
    let mut used = h_len + 3;
    let rest = &s[used..];
    for (suffix, spoken) in [
        (" am", " a m"),
        (" pm", " p m"),
        ("am", " a m"),
        ("pm", " p m"),
    ] {
        if rest.to_ascii_lowercase().starts_with(suffix)
            && rest[suffix.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric())
        {
            words.push_str(spoken);
            used += suffix.len();
            break;
        }
    }
    if h_len == 1 && chars.len() < used {
        return None;
    }
    Some((words, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(number_words(0), "zero");
        assert_eq!(number_words(7), "seven");
        assert_eq!(number_words(42), "forty-two");
        assert_eq!(number_words(100), "one hundred");
        assert_eq!(number_words(1_234), "one thousand two hundred thirty-four");
        assert_eq!(number_words(2_000_005), "two million five");
        assert_eq!(number_words(u64::MAX).split(' ').next(), Some("eighteen"));
    }

    #[test]
    fn robot_sentences() {
        let cases = [
            ("Move 2.5 m forward.", "Move two point five meters forward."),
            ("Battery at 85%.", "Battery at eighty-five percent."),
            ("Turn 90° left.", "Turn ninety degrees left."),
            (
                "Speed 1 m/s, max 3.6 km/h.",
                "Speed one meter per second, max three point six kilometers per hour.",
            ),
            (
                "It is 21.5 °C inside.",
                "It is twenty-one point five degrees Celsius inside.",
            ),
            (
                "Meet Dr. Smith at 7:30 pm.",
                "Meet Doctor Smith at seven thirty p m.",
            ),
            ("At 14:05 we leave.", "At fourteen oh five we leave."),
            (
                "Bring tools, e.g. a wrench.",
                "Bring tools, for example a wrench.",
            ),
            (
                "It weighs 1,250 kg.",
                "It weighs one thousand two hundred fifty kilograms.",
            ),
            ("Items 3, 4 and 5.", "Items three, four and five."),
            ("Temperature -5 degrees.", "Temperature minus five degrees."),
            ("Room 12B", "Room twelve B"),
            ("Done 🎉! ✅", "Done !"),
            ("a\u{0}b\tc", "a b c"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input}");
        }
    }

    #[test]
    fn no_panic_on_odd_input() {
        for s in [
            "",
            "   ",
            ":",
            "1:",
            "12:3",
            "99:99",
            "1.",
            ".5",
            "-",
            "--1",
            "1,",
            ",1",
            "9".repeat(100).as_str(),
            "日本語 3つ",
            "١٢٣",
        ] {
            let _ = normalize(s);
        }
        assert_eq!(normalize("9".repeat(30).as_str()).split(' ').count(), 30);
    }
}
