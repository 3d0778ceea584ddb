//! Korean text the tests make themselves, and its CP949 bytes from an
//! encoder other than etl's own: Python's `cp949` codec. etl decodes and
//! encodes code pages with encoding_rs; a test that built its CP949 bytes
//! with encoding_rs too would check etl against itself.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Lines of Korean text from known code points: a first line of syllables
/// that only CP949 has (똠, 펲: EUC-KR lacks them, and their second bytes
/// are ASCII letters), then words of Hangul syllables taken across the
/// whole block U+AC00..U+D7A3 (the 2,350 of KS X 1001 and the 8,822 that
/// CP949 adds), with Hanja, compatibility jamo and symbols of KS X 1001
/// among them. No comma, quote or backslash: tests put lines into CSV
/// fields and SQL strings as they are. Ends with a line break.
pub fn korean_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let hanja = [
            '因', '九', '月', '亞', '家', '仁', '川', '女', '中', '上', '乙',
        ];
        let symbols = ['☆', '♡', '⌒', '㉯', 'ⓡ', 'ⓔ', '¿', '·'];
        let mut lines = vec!["똠방각하 펲시콜라".to_string()];
        let mut n: u32 = 7;
        for line in 0..23usize {
            let mut words = Vec::new();
            for word in 0..5 + line % 4 {
                let mut w = String::new();
                for _ in 0..2 + (line + word) % 4 {
                    n = (n * 389 + 1123) % 11_172;
                    w.push(char::from_u32(0xAC00 + n).unwrap());
                }
                match (line + word) % 5 {
                    0 => w.push(hanja[(line + word) % hanja.len()]),
                    1 => w.push(symbols[(line * 3 + word) % symbols.len()]),
                    2 => w.push(char::from_u32(0x3131 + (n % 51)).unwrap()),
                    _ => {}
                }
                words.push(w);
            }
            lines.push(words.join(" ") + ["", ".", "!", " ...", "?"][line % 5]);
        }
        lines.join("\n") + "\n"
    })
}

/// `text` in CP949, encoded by Python's `cp949` codec (one python3 call).
/// A character CP949 lacks fails the test with Python's message.
pub fn cp949(text: &str) -> Vec<u8> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read().decode('utf-8').encode('cp949'))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/install-deps.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let input = text.as_bytes().to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "python3 could not encode the text in cp949: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
