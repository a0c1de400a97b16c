//! Render cases from Pinpoint's helper page and the issue's examples.

use serde_json::json;

use super::*;

fn render(source: &str, ctx: serde_json::Value) -> Result<String, Box<dyn std::error::Error>> {
    let r = Renderer::new();
    let part = r.compile(source)?;
    Ok(r.render(&part, &ctx)?)
}

fn ok(source: &str, ctx: serde_json::Value) -> String {
    render(source, ctx).unwrap_or_else(|e| panic!("{source}: {e}"))
}

#[test]
fn issue_examples_render_unchanged() {
    let ctx = json!({"User": {"UserAttributes": {"FirstName": ["Ana"], "Age": ["18"]}}, "Location": {"Country": "US"}, "Month": ["March"]});
    assert_eq!(
        ok("Hey {{User.UserAttributes.FirstName}}, your {{Month}} update is here", ctx.clone()),
        "Hey Ana, your March update is here"
    );
    let t = r#"{{#and (gte User.UserAttributes.Age.[0] "18") (eq Location.Country "US")}}You are an 18-year-old in the US.{{else}}You aren't an 18-year-old in the US.{{/and}}"#;
    assert_eq!(ok(t, ctx), "You are an 18-year-old in the US.");
    let young = json!({"User": {"UserAttributes": {"Age": ["9"]}}, "Location": {"Country": "US"}});
    assert_eq!(ok(t, young), "You aren&#x27;t an 18-year-old in the US.".replace("&#x27;", "'"));
}

#[test]
fn values_print_as_javascript_does() {
    let ctx = json!({"L": ["a", "b"], "N": 12, "F": 59.99, "O": {"k": 1}, "S": "<b>&"});
    assert_eq!(ok("{{L}}|{{L.[1]}}|{{L.[5]}}|{{N}}|{{F}}|{{O}}|{{Missing}}|", ctx.clone()), "a,b|b||12|59.99|[object Object]||");
    assert_eq!(ok("{{S}} {{{S}}} {{&S}}", ctx), "&lt;b&gt;&amp; <b>& <b>&");
    assert_eq!(ok("{{User.UserAttributes.[Last Name].[0]}}", json!({"User": {"UserAttributes": {"Last Name": ["Doe"]}}})), "Doe");
    assert_eq!(ok("new {{X}} record", json!({})), "new  record");
}

#[test]
fn conditionals_have_block_and_inline_forms() {
    let ctx = json!({"Metrics": {"sessions": 12}, "C": ["red"], "A": ["22"]});
    assert_eq!(ok(r#"{{eq Metrics.sessions "12"}}"#, ctx.clone()), "true");
    assert_eq!(ok(r#"{{eq A.[0] 22.0}}"#, ctx.clone()), "true");
    assert_eq!(ok(r#"{{neq C.[0] "red" yes="y" no="n"}}"#, ctx.clone()), "n");
    assert_eq!(ok(r#"{{#neq Favorite.Colors.[0] "red"}}You do not like red.{{else}}red{{/neq}}"#, ctx.clone()), "You do not like red.");
    assert_eq!(ok(r#"{{not (eq C.[0] "red")}}"#, ctx.clone()), "false");
    assert_eq!(ok(r#"{{#or (eq C.[0] "blue") (gt A.[0] "17")}}yes{{/or}}"#, ctx.clone()), "yes");
    assert_eq!(ok(r#"{{#if Missing}}a{{else if C}}b{{else}}c{{/if}}"#, ctx.clone()), "b");
    assert_eq!(ok(r#"{{if C yes="has" no="none"}}"#, ctx.clone()), "has");
    assert_eq!(ok(r#"{{#if Z includeZero=true}}zero{{/if}}"#, json!({"Z": 0})), "zero");
    assert_eq!(ok(r#"{{#lt "10a" "9a"}}lex{{/lt}} {{#gt "9" "17"}}no{{else}}numeric{{/gt}}"#, json!({})), "lex numeric");
    assert!(render(r#"{{and C}}"#, ctx.clone()).is_err());
    assert!(render(r#"{{unless C}}"#, ctx).is_err());
}

#[test]
fn each_stops_at_fifteen() {
    let list: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    assert_eq!(
        ok("{{#each L}}{{this}}{{#if @last}}!{{else}},{{/if}}{{/each}}", json!({"L": list})),
        "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15!"
    );
    assert_eq!(
        ok("{{#each FavoriteColors}}<li>{{this}}</li>{{/each}}", json!({"FavoriteColors": ["red", "blue", "yellow"]})),
        "<li>red</li><li>blue</li><li>yellow</li>"
    );
    assert_eq!(ok("{{#each M}}x{{else}}none{{/each}}", json!({})), "none");
    assert_eq!(ok("{{#each O}}{{@key}}={{this}};{{/each}}", json!({"O": {"a": 1, "b": "x"}})), "a=1;b=x;");
}

#[test]
fn string_helpers_follow_the_page() {
    let ctx = json!({"City": "Los Angeles", "Last": ["Alejandro"], "Post": "my first post", "Colors": ["blue", "red", "green"], "N": 12, "Sub": ["true"]});
    let cases = [
        ("{{abbreviate Last.[0] 6}}", "Ale..."),
        ("{{capitalize Post}}", "My First Post"),
        ("{{capitalizeFirst Post}}", "My first post"),
        ("{{capitalizeFirst (lower \"JANE\")}}", "Jane"),
        ("[{{center City size=19}}]", "[    Los Angeles    ]"),
        ("{{center \"ab\" 7 pad=\"xy\"}}", "xyabxyx"),
        ("[{{ljust City 15}}][{{rjust City 15}}]", "[Los Angeles    ][    Los Angeles]"),
        ("{{rjust N 5 pad=\"0\"}}", "00012"),
        ("{{rjust \"x\" 4 pad=\"ab\"}}", "abax"),
        ("{{cut City \"e\"}}", "Los Angls"),
        ("{{inflect 3 apple apples includeCount=false}}", "apples"),
        ("{{inflect 3 apple apples includeCount=true}}", "3 apples"),
        ("{{inflect 1 \"apple\" \"apples\"}}", "apple"),
        ("{{join Colors \", \"}}", "blue, red, green"),
        ("{{join \"a\" \"b\" \"c\" \"-\"}}", "a-b-c"),
        ("{{join Missing \",\" prefix=\"<\"}}", ""),
        ("{{lower \"Santos\"}} {{upper \"Roe\"}} {{upper \"ß\"}}", "santos ROE SS"),
        ("{{ordinalize 22}} {{ordinalize 111}} {{ordinalize -2}} {{ordinalize 0}}", "22nd 111th -2nd 0th"),
        ("{{replace City \" \" \"_\"}}", "Los_Angeles"),
        ("{{slugify City}}", "los-angeles"),
        ("{{slugify \"  Hello, World! It's 2026 -- rock_n roll  \"}}", "hello-world-its-2026-rock_n-roll"),
        ("{{slugify \"Café Münster\"}}", "café-münster"),
        ("{{stripTags \"<h1>Art</h1>\"}}", "Art"),
        ("{{substring City 4 9}}", "Angel"),
        ("{{yesno Sub}} {{yesno Missing}} {{yesno false no=\"nope\"}}", "yes maybe nope"),
    ];
    for (t, want) in cases {
        assert_eq!(ok(t, ctx.clone()), want, "{t}");
    }
    for bad in ["{{abbreviate City 3}}", "{{substring City -1}}", "{{yesno City}}", "{{inflect \"x\" a b}}", "{{ordinalize 1.5}}"] {
        assert!(render(bad, ctx.clone()).is_err(), "{bad} should fail");
    }
}

#[test]
fn math_and_encoding_helpers_follow_the_page() {
    let cases = [
        ("{{add 5 2.3}}", "7.3"),
        ("{{subtract 5 2.3}}", "2.7"),
        ("{{multiply 5 2.3}}", "11.5"),
        ("{{divide 5 2.3}}", "2.17391304"),
        ("{{modulo 7 2}} {{modulo -7 2}}", "1 -1"),
        ("{{ceiling 5.23}} {{floor 5.23}} {{round 19.21}} {{round 2.5}} {{round -2.5}}", "6 5 19 3 -2"),
        ("{{#if (subtract 5 5)}}t{{else}}f{{/if}}", "f"),
        ("{{add Missing 1}}", ""),
        ("{{encode64 \"Hello World\"}}", "SGVsbG8gV29ybGQ&#x3D;"),
        ("{{{encode64 \"Hello World\"}}}", "SGVsbG8gV29ybGQ="),
        ("{{decode64 \"SGVsbG8gd29ybGQ=\"}} {{decode64 \"SGVsbG8gd29ybGQ\"}}", "Hello world Hello world"),
        ("{{md5 \"Hello World\"}}", "b10a8db164e0754105b7a99be72e3fe5"),
        ("{{md5 \"\"}}", "d41d8cd98f00b204e9800998ecf8427e"),
        ("{{sha256 \"Hello World\"}}", "a591a6d40bf420404a011733cfb7b190d62c65bf0bcda32b57b277d9ad9f146e"),
    ];
    for (t, want) in cases {
        assert_eq!(ok(t, json!({})), want, "{t}");
    }
    let id = ok("{{uuid}}", json!({}));
    assert!(id.len() == 36 && id.as_bytes()[14] == b'4', "{id}");
    for bad in ["{{add \"x\" 1}}", "{{divide 1 0}}", "{{add true 1}}", "{{decode64 \"a-b_\"}}"] {
        assert!(render(bad, json!({})).is_err(), "{bad} should fail");
    }
}

#[test]
fn parse_errors_name_line_and_column() {
    let r = Renderer::new();
    let e = r.compile("Hello\n{{#if x}}unclosed").unwrap_err();
    assert!(e.line >= 1, "{e:?}");
    let e = r.compile("ok {{ }}").unwrap_err();
    assert_eq!(e.line, 1, "{e:?}");
}

#[test]
fn inline_partials_render_with_the_current_context() {
    assert_eq!(
        ok("{{#*inline \"name\"}}{{First}} {{Last}}{{/inline}}Hello {{> name}}!", json!({"First": "Jane", "Last": "Doe"})),
        "Hello Jane Doe!"
    );
}

#[test]
fn dates_take_styles_patterns_zones_and_bare_words() {
    let ctx = json!({"User": {"UserAttributes": {"StartDate": ["09/19/2020"]}}, "D": "2026-03-15T10:30:00Z", "Demographic": {}});
    let t = r#"{{dateFormat User.UserAttributes.StartDate.[0] inputFormat="MM/dd/yyyy" outputFormat="full" tz=America/Los_Angeles}}"#;
    assert_eq!(ok(t, ctx.clone()), "Saturday, September 19, 2020");
    assert_eq!(ok(r#"{{dateFormat D "medium" tz=America/Los_Angeles}}"#, ctx.clone()), "Mar 15, 2026");
    assert_eq!(
        ok(r#"{{dateFormat D}}|{{dateFormat D "short"}}|{{dateFormat D "yyyy-MM-dd HH:mm z" tz="Asia/Tokyo"}}"#, ctx.clone()),
        "Mar 15, 2026|3/15/26|2026-03-15 19:30 JST"
    );
    assert_eq!(ok(r#"{{dateFormat D outputFormat=long tz=Demographic.Timezone}}"#, ctx.clone()), "March 15, 2026");
    assert_eq!(ok(r#"{{dateFormat 0 "yyyy"}} {{dateFormat "86400000" "d"}}"#, ctx.clone()), "1970 2");
    assert_eq!(ok(r#"{{dateFormat Missing "full"}}"#, ctx.clone()), "");
    let year = chrono::Utc::now().format("%Y").to_string();
    assert_eq!(ok(r#"{{now "yyyy" tz=UTC}}"#, ctx.clone()), year);
    assert_eq!(ok("{{now yyyy}}", ctx.clone()), year);
    assert!(ok("{{now}}", ctx.clone()).contains(&year));
    assert!(render(r#"{{dateFormat D tz="Mars/Base"}}"#, ctx.clone()).is_err());
    assert!(render(r#"{{dateFormat "19/09/2020"}}"#, ctx).is_err());
}

#[test]
fn inverted_helper_blocks_mean_unless() {
    assert_eq!(inverse_helper_blocks(r#"{{^eq Id "e1"}}A{{else}}B{{/eq}}"#), r#"{{#unless (eq Id "e1")}}A{{else}}B{{/unless}}"#);
    assert_eq!(inverse_helper_blocks("{{^Missing}}none{{/Missing}}"), "{{#unless Missing}}none{{/unless}}");
    assert_eq!(inverse_helper_blocks("{{#if a}}x{{^}}y{{/if}}"), "{{#if a}}x{{^}}y{{/if}}");
    assert_eq!(ok(r#"{{^eq Id "e1"}}not{{else}}is{{/eq}}|{{~^gt N 5~}} small {{~/gt~}}"#, json!({"Id": "e1", "N": 3})), "is|small");
}

#[test]
fn standalone_partials_indent_every_line_and_blocks_take_params() {
    let t = "{{#*inline \"row\"}}<td>{{this}}</td>\n<td>!</td>\n{{/inline}}<tr>\n  {{> row}}\n</tr>";
    assert_eq!(ok(t, json!("x")), "<tr>\n  <td>x</td>\n  <td>!</td>\n</tr>");
    assert_eq!(ok("{{#each L as |item i|}}{{i}}={{item}};{{/each}}", json!({"L": ["a", "b"]})), "0=a;1=b;");
    assert_eq!(ok("{{#with User}}{{UserId}}{{/with}}|{{#with Nope}}x{{else}}none{{/with}}", json!({"User": {"UserId": "u"}})), "u|none");
    assert_eq!(ok("{{lookup O \"k\"}} {{lookup L 1}}", json!({"O": {"k": "v"}, "L": ["a", "b"]})), "v b");
    assert_eq!(ok("{{#each L}}{{@root.Id}}{{../Id}}{{/each}}", json!({"Id": "e", "L": [1]})), "ee");
    assert_eq!(ok("{{^Missing}}none{{/Missing}}|{{#Flag}}on{{/Flag}}", json!({"Flag": true})), "none|on");
    assert!(Renderer::new().compile("{{frobnicate x}}").unwrap_err().message.contains("unknown helper"));
    assert!(Renderer::new().compile("{{> missing}}").is_err());
}

#[test]
fn string_literals_take_tabs_and_line_breaks_as_handlebars_js_does() {
    // handlebars.js 4.7: {{#if (eq a "x<TAB>y")}} compares with the tab itself.
    let r = crate::render::Renderer::new();
    let ctx = serde_json::json!({"a": "x\ty", "b": "one\ntwo"});
    let part = r.compile("{{#if (eq a \"x\ty\")}}tab{{/if}} {{#if (eq b 'one\ntwo')}}break{{/if}}\t{{a}}").unwrap();
    assert_eq!(r.render(&part, &ctx).unwrap(), "tab break\tx\ty");
    // Text outside mustaches and comments keep their characters.
    let part = r.compile("a\tb{{!-- \"\t --}}c").unwrap();
    assert_eq!(r.render(&part, &ctx).unwrap(), "a\tbc");
}

#[test]
fn parse_errors_point_into_the_source_as_written() {
    let r = crate::render::Renderer::new();
    // The unclosed block is on line 2; a literal with a tab on line 1 shifts nothing.
    let e = r.compile("{{#if (eq a \"\t\")}}x{{/if}}\n  {{#each list}}").unwrap_err();
    assert!(e.line >= 2, "{e:?}");
    assert_ne!((e.line, e.column), (0, 0), "{e:?}");
}
