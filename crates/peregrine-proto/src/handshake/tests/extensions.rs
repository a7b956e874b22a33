//! The `Sec-WebSocket-Extensions` grammar.

use super::super::{ExtensionOffer, HandshakeError, check_extensions, format_extensions, parse_extensions};

fn parse(value: &str) -> Vec<ExtensionOffer> {
    parse_extensions([value]).unwrap()
}

#[test]
fn single_extension_without_params() {
    assert_eq!(parse("permessage-deflate"), [ExtensionOffer::new("permessage-deflate")]);
}

#[test]
fn params_with_and_without_values() {
    let offers = parse("permessage-deflate; client_max_window_bits; server_max_window_bits=10");
    assert_eq!(
        offers,
        [ExtensionOffer::new("permessage-deflate")
            .with_flag("client_max_window_bits")
            .with_param("server_max_window_bits", "10")]
    );
    assert_eq!(offers[0].param("CLIENT_MAX_WINDOW_BITS"), Some(None));
    assert_eq!(offers[0].param("server_max_window_bits"), Some(Some("10")));
    assert_eq!(offers[0].param("absent"), None);
}

#[test]
fn quoted_values_are_unescaped() {
    let offers = parse(r#"x; a="10"; b="1\0""#);
    assert_eq!(offers[0].params, [("a".into(), Some("10".into())), ("b".into(), Some("10".into()))]);
}

#[test]
fn quoted_strings_may_hold_commas_only_if_they_fail_as_tokens() {
    // A comma inside quotes does not split the list, but the value is not a
    // token, which RFC 6455 §9.1 forbids.
    let err = parse_extensions([r#"x; a="1,2", y"#]).unwrap_err();
    assert_eq!(err.problem(), "quoted parameter value is not a token");
    assert_eq!(err.offset(), 6);
}

#[test]
fn several_offers_across_several_headers() {
    let offers = parse_extensions([
        "permessage-deflate; client_max_window_bits, permessage-deflate",
        "x-webkit-deflate-frame",
    ])
    .unwrap();
    let names: Vec<&str> = offers.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["permessage-deflate", "permessage-deflate", "x-webkit-deflate-frame"]);
}

#[test]
fn whitespace_and_empty_elements_are_tolerated() {
    let offers = parse(" ,\ta ;\tb = c , , d ;e= \"f\" ,");
    assert_eq!(
        offers,
        [ExtensionOffer::new("a").with_param("b", "c"), ExtensionOffer::new("d").with_param("e", "f"),]
    );
    assert!(parse("").is_empty());
    assert!(parse_extensions(Vec::<&str>::new()).unwrap().is_empty());
}

#[test]
fn bytes_and_str_inputs_agree() {
    assert_eq!(parse_extensions([b"a; b".as_slice()]), parse_extensions(["a; b"]));
}

#[test]
fn malformed_values_are_rejected_with_a_position() {
    let cases: &[(&str, &str, usize)] = &[
        (";", "expected an extension name", 0),
        ("a;", "expected a parameter name", 2),
        ("a; ", "expected a parameter name", 3),
        ("a;=1", "expected a parameter name", 2),
        ("a; b=", "expected a parameter value", 5),
        ("a; b==c", "expected a parameter value", 5),
        ("a; b=c d", "expected ',' or ';'", 7),
        ("a b", "expected ',' or ';'", 2),
        ("a; b=\"c", "unterminated quoted string", 7),
        ("a; b=\"c\\", "invalid escape in quoted string", 8),
        ("a; b=\"\"", "quoted parameter value is not a token", 6),
        ("a; b=\"c d\"", "quoted parameter value is not a token", 6),
        ("a; b=\"c\"d", "expected ',' or ';'", 8),
        ("a; b=\"c\u{7f}\"", "invalid character in quoted string", 7),
        ("a/b", "expected ',' or ';'", 1),
        ("\"a\"", "expected an extension name", 0),
        ("é", "expected an extension name", 0),
    ];
    for &(value, problem, offset) in cases {
        let err = parse_extensions([value]).unwrap_err();
        assert_eq!((err.problem(), err.offset()), (problem, offset), "{value:?}");
        assert!(err.to_string().contains(problem));
    }
}

#[test]
fn formatting_round_trips() {
    let offers = vec![
        ExtensionOffer::new("permessage-deflate")
            .with_flag("client_max_window_bits")
            .with_param("server_max_window_bits", "10"),
        ExtensionOffer::new("x-two"),
    ];
    let value = format_extensions(&offers);
    assert_eq!(value, "permessage-deflate; client_max_window_bits; server_max_window_bits=10, x-two");
    assert_eq!(parse_extensions([&value]).unwrap(), offers);
    assert_eq!(format_extensions(&[]), "");
}

#[test]
fn display_quotes_values_that_are_not_tokens() {
    let offer = ExtensionOffer::new("x").with_param("a", "b \"c\" \\");
    assert_eq!(offer.to_string(), r#"x; a="b \"c\" \\""#);
}

#[test]
fn check_rejects_unoffered_names() {
    let accepted = parse("permessage-deflate; server_no_context_takeover");
    assert_eq!(check_extensions(&accepted, &["Permessage-Deflate"]), Ok(()));
    assert_eq!(
        check_extensions(&accepted, &["x-other"]),
        Err(HandshakeError::UnofferedExtension("permessage-deflate".into()))
    );
    assert_eq!(check_extensions::<&str>(&[], &[]), Ok(()));
}
