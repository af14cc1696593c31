use super::string::format_float;
use super::*;

#[test]
fn lookup_is_case_insensitive_and_bounded() {
    assert_eq!(lookup(b"GET").map(|i| COMMANDS[i].name), Some("get"));
    assert_eq!(lookup(b"gEt").map(|i| COMMANDS[i].name), Some("get"));
    assert_eq!(lookup(b"incrbyfloat").map(|i| COMMANDS[i].name), Some("incrbyfloat"));
    assert_eq!(lookup(b"nope"), None);
    assert_eq!(lookup(&[b'a'; 1000]), None);
}

#[test]
fn every_command_is_reachable_and_documented() {
    for (i, c) in COMMANDS.iter().enumerate() {
        assert_eq!(lookup(c.name.as_bytes()), Some(i), "{}", c.name);
        assert!(c.name.len() <= NAME_LEN_MAX, "{}", c.name);
        assert!(!c.summary.is_empty() && !c.since.is_empty(), "{}", c.name);
        assert!(c.arity != 0, "{}", c.name);
        assert_eq!(c.name, c.name.to_ascii_lowercase());
    }
}

#[test]
fn floats_print_like_redis() {
    assert_eq!(format_float(0.1 + 0.2), "0.3");
    assert_eq!(format_float(10.5 + 0.1), "10.6");
    assert_eq!(format_float(3000.0), "3000");
    assert_eq!(format_float(-1.5), "-1.5");
    assert_eq!(format_float(0.0), "0");
    assert_eq!(format_float(5.0e-3), "0.005");
    assert_eq!(format_float(1e-20), "0");
    assert_eq!(format_float(-0.0), "0");
    assert_eq!(format_float(1e20), "100000000000000000000");
    let max = format_float(f64::MAX);
    assert!(max.starts_with("17976931348623157081452742373170435679807056752584499659891747680315726078002853876058955863276687817154045895351438246423432132688946418276846754670353751698604991057655128207624549009038932894407586850845513394230458323690322294816580855933212334827479782620414472316873817718091929988125040402618412485836"), "{max}");
    assert_eq!(max.len(), 309);
}

#[test]
fn unknown_command_text_matches_redis() {
    let args: [&[u8]; 3] = [b"foo", b"a", b"b"];
    assert_eq!(
        unknown_command(Args::from_slices(&args)),
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    let args: [&[u8]; 1] = [b"foo"];
    assert_eq!(unknown_command(Args::from_slices(&args)), "ERR unknown command 'foo', with args beginning with: ");
}
