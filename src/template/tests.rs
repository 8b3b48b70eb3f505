//! The engine's tests, through `Template`: what a template prints, how it fails, and
//! the limits that keep a hostile one from exhausting the machine.

use super::*;
use serde_json::json;

fn render(t: &str, data: &Value) -> String {
    Template::parse(t).unwrap_or_else(|e| panic!("{t}: {e}")).render(data).unwrap_or_else(|e| panic!("{t}: {e}"))
}

fn data() -> Value {
    json!({
        "Id": "sha256:abc",
        "Size": 1234567,
        "Ratio": 1.5,
        "RepoTags": ["app:1", "app:2"],
        "Empty": [],
        "Config": {"Labels": {"b": "2", "a": "1"}, "Env": ["A=1"], "User": ""},
        "Nothing": null,
        "Yes": true
    })
}

#[test]
fn fields_print_as_go_does() {
    let d = data();
    assert_eq!(render("{{.Id}}", &d), "sha256:abc");
    assert_eq!(render("{{.Size}}", &d), "1234567");
    assert_eq!(render("{{.Ratio}}", &d), "1.5");
    assert_eq!(render("{{.RepoTags}}", &d), "[app:1 app:2]");
    assert_eq!(render("{{.Config.Labels}}", &d), "map[a:1 b:2]");
    assert_eq!(render("{{.Nothing}}", &d), "<no value>");
    assert_eq!(render("{{.Missing}}", &d), "<no value>");
    assert_eq!(render("{{.Config.Missing.Deeper}}", &d), "<no value>");
    assert_eq!(render("{{.Yes}}", &d), "true");
    assert_eq!(render("{{.Empty}}", &d), "[]");
    assert_eq!(render("x {{.Id}} y\n", &d), "x sha256:abc y\n");
    assert_eq!(render("{{.}}", &json!({"a": [1, null]})), "map[a:[1 <nil>]]");
}

#[test]
fn json_index_and_pipelines() {
    let d = data();
    assert_eq!(render("{{json .Config.Labels}}", &d), r#"{"a":"1","b":"2"}"#);
    assert_eq!(render("{{json .Id}}", &d), r#""sha256:abc""#);
    assert_eq!(render("{{.Config.Labels | json}}", &d), r#"{"a":"1","b":"2"}"#);
    assert_eq!(render(r#"{{index .Config.Labels "b"}}"#, &d), "2");
    assert_eq!(render(r#"{{index .Config.Labels "zz"}}"#, &d), "<no value>");
    assert_eq!(render("{{index .RepoTags 1}}", &d), "app:2");
    assert_eq!(render(r#"{{join .RepoTags ", "}}"#, &d), "app:1, app:2");
    assert_eq!(render(r#"{{.Id | upper}} {{lower "AB"}} {{title "hello world"}}"#, &d), "SHA256:ABC ab Hello World");
    assert_eq!(render("{{len .RepoTags}}", &d), "2");
    assert_eq!(render(r#"{{truncate .Id 6}}|{{pad "x" 1 2}}|"#, &d), "sha256| x  |");
    assert_eq!(render(r#"{{split "a,b" ","}}"#, &d), "[a b]");
    assert_eq!(render(r#"{{(index .RepoTags 0) | printf "%s!"}}"#, &d), "app:1!");
    assert_eq!(render(r#"{{printf "%s=%d %q" "a" 3 "b"}}"#, &d), r#"a=3 "b""#);
    assert_eq!(render(r#"{{print 1 2 "x" 3}}"#, &d), "1 2x3");
    assert_eq!(render(r#"{{println "a" 1}}"#, &d), "a 1\n");
}

#[test]
fn printf_takes_go_flags_widths_and_precisions() {
    let d = data();
    let p = |f: &str| render(f, &d);
    assert_eq!(p(r#"{{printf "%-10s|" "app"}}"#), "app       |");
    assert_eq!(p(r#"{{printf "%10s|" "app"}}"#), "       app|");
    assert_eq!(p(r#"{{printf "%5d|%-5d|%05d|%+d" 42 42 42 42}}"#), "   42|42   |00042|+42");
    assert_eq!(p(r#"{{printf "%05d|% d|%x|%X|%#x|%o|%b" -42 7 255 255 255 8 5}}"#), "-0042| 7|ff|FF|0xff|10|101");
    assert_eq!(
        p(r#"{{printf "%.2f|%8.3f|%e|%g|%.3g" 3.14159 2.5 1234.5 0.5 1234.5}}"#),
        "3.14|   2.500|1.234500e+03|0.5|1.23e+03"
    );
    assert_eq!(p(r#"{{printf "%.3s|%-6.2s|" "abcdef" "xyz"}}"#), "abc|xy    |");
    assert_eq!(p(r#"{{printf "%q|%t|%c|%v|%%" "a\"b" true 65 .RepoTags}}"#), r#""a\"b"|true|A|[app:1 app:2]|%"#);
    assert_eq!(p(r#"{{printf "%*d|%-*s|" 4 7 3 "x"}}"#), "   7|x  |");
    // Widths count characters, not bytes.
    assert_eq!(p(r#"{{printf "%-4s|" "é"}}"#), "é   |");
    assert_eq!(p(r#"{{printf "%x" "hi"}}"#), "6869");
    // What Go prints for a verb that does not fit, a missing or an extra argument.
    assert_eq!(p(r#"{{printf "%d" "x"}}"#), "%!d(string=x)");
    assert_eq!(p(r#"{{printf "%s %s" "a"}}"#), "a %!s(MISSING)");
    assert_eq!(p(r#"{{printf "%s" "a" 1}}"#), "a%!(EXTRA int=1)");
    assert_eq!(p(r#"{{printf "%-12s%s" .Id "!"}}"#), "sha256:abc  !");
    assert_eq!(p(r#"{{printf "%7d" .Size}}"#), "1234567");
    // A huge width is refused, not allocated.
    for huge in
        [r#"{{printf "%99999999999d" 1}}"#, r#"{{printf "%.99999999999d" 1}}"#, r#"{{printf "%.*f" 99999999999 1.5}}"#]
    {
        let err = Template::parse(huge).unwrap().render(&d).unwrap_err().to_string();
        assert!(err.contains("longer than"), "{huge}: {err}");
    }
}

#[test]
fn control_structures_and_variables() {
    let d = data();
    assert_eq!(render("{{range .RepoTags}}[{{.}}]{{end}}", &d), "[app:1][app:2]");
    assert_eq!(render("{{range $i, $t := .RepoTags}}{{$i}}={{$t}} {{end}}", &d), "0=app:1 1=app:2 ");
    assert_eq!(render("{{range $k, $v := .Config.Labels}}{{$k}}:{{$v}};{{end}}", &d), "a:1;b:2;");
    assert_eq!(render("{{range .Empty}}x{{else}}none{{end}}", &d), "none");
    assert_eq!(render("{{if .Config.User}}u{{else if .Yes}}yes{{else}}no{{end}}", &d), "yes");
    assert_eq!(render("{{if not .Nothing}}empty{{end}}", &d), "empty");
    assert_eq!(render("{{with .Config}}{{.Env}}{{end}}", &d), "[A=1]");
    assert_eq!(render("{{with .Nothing}}x{{else}}nothing{{end}}", &d), "nothing");
    assert_eq!(render("{{$x := .Id}}{{range .RepoTags}}{{$x}} {{end}}", &d), "sha256:abc sha256:abc ");
    assert_eq!(render("{{range .RepoTags}}{{$.Id}}{{end}}", &d), "sha256:abcsha256:abc");
    assert_eq!(render(r#"{{if eq .Id "x" "sha256:abc"}}eq{{end}}{{if ne .Size 1}}ne{{end}}"#, &d), "eqne");
    assert_eq!(render("{{and .Yes .Id}} {{or .Nothing .Size}}", &d), "sha256:abc 1234567");
    assert_eq!(render("a  {{- /* note */ -}}  b {{- .Id -}} \n c", &d), "absha256:abcc");
}

#[test]
fn errors_name_the_problem() {
    let parse_err = |t: &str| Template::parse(t).unwrap_err().to_string();
    assert!(parse_err("{{.Id").contains("unclosed action"), "{}", parse_err("{{.Id"));
    assert!(parse_err("{{if .Id}}x").contains("has no {{end}}"));
    assert!(parse_err("{{end}}").contains("unexpected {{end}}"));
    assert!(parse_err("{{\"abc}}").contains("unterminated"));
    assert!(parse_err("{{}}").contains("missing value"));
    assert!(parse_err("{{template \"x\"}}").contains("not supported"));
    let run_err = |t: &str| Template::parse(t).unwrap().render(&data()).unwrap_err().to_string();
    assert!(run_err("{{nosuch .Id}}").contains(r#"function "nosuch" not defined"#));
    assert!(run_err("{{.Id.Foo}}").contains("can't evaluate field Foo in type string"));
    assert!(run_err("{{index .RepoTags 5}}").contains("out of range"));
    assert!(run_err("{{.Id 1}}").contains("non-function"));
    let strict = Template::parse("{{.Nope}}").unwrap().missing_key_error();
    assert!(strict.render(&json!({"ID": 1})).unwrap_err().to_string().contains(r#"no field "Nope""#));
    assert!(run_err("{{$nope}}").contains("undefined variable"));
}

#[test]
fn hostile_templates_fail_with_an_error_instead_of_exhausting_the_machine() {
    let run_err = |t: &str| Template::parse(t).unwrap().render(&data()).unwrap_err().to_string();
    assert!(run_err("{{pad .Id 99999999999 0}}").contains("pad: result longer than 16 MiB"));
    assert!(run_err("{{pad .Id 9223372036854775807 9223372036854775807}}").contains("longer than"));
    assert!(run_err("{{range 1000000000000}}{{end}}").contains("evaluation stopped after"));
    assert!(run_err("{{range 100000}}{{range 100000}}{{end}}{{end}}").contains("evaluation stopped after"));
    assert!(run_err(r#"{{$x := "ab"}}{{range 64}}{{$x = print $x $x}}{{end}}"#).contains("longer than"));
    assert!(run_err(r#"{{$x := "ab"}}{{range 64}}{{$x = printf "%s%s" $x $x}}{{end}}"#).contains("longer than"));
    let long_join = r#"{{$x := "ab"}}{{range 20}}{{$x = print $x $x}}{{end}}{{join (split $x "") $x}}"#;
    assert!(run_err(long_join).contains("longer than"));
    assert!(run_err(r#"{{range 2000000}}x{{end}}"#).contains("stopped after"));
    // A small range still works.
    assert_eq!(render("{{range 3}}{{.}}{{end}}", &data()), "012");
    assert_eq!(render("{{range $i, $e := 2}}{{$i}}{{$e}};{{end}}", &data()), "00;11;");
    let parse_err = |t: &str| Template::parse(t).unwrap_err().to_string();
    let deep_parens = format!("{{{{{}1{}}}}}", "(".repeat(50_000), ")".repeat(50_000));
    assert!(parse_err(&deep_parens).contains("nested more than 100 levels"));
    let deep_blocks = format!("{}{}", "{{if 1}}".repeat(50_000), "{{end}}".repeat(50_000));
    assert!(parse_err(&deep_blocks).contains("nested more than 100 levels"));
    // 100 levels are fine.
    let ok = format!("{}x{}", "{{if 1}}".repeat(100), "{{end}}".repeat(100));
    assert_eq!(render(&ok, &data()), "x");
    // Many columns cost no stack.
    let cols = "a\t".repeat(200_000);
    assert_eq!(align_table(&format!("{cols}\n")).len(), 200_000 * 10 + 1);
}

#[test]
fn header_rendering_passes_functions_through() {
    let t = Template::parse("{{.ID}}\t{{json .Size}}\t{{upper .Tag}}").unwrap();
    let titles = json!({"ID": "IMAGE ID", "Size": "SIZE", "Tag": "TAG"});
    assert_eq!(t.render_header(&titles).unwrap(), "IMAGE ID\tSIZE\tTAG");
}
