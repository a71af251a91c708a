//! `cargo xtask imports`: each crate's file-level import graph must be a tree.
//!
//! Every `use` and every path written in code (`crate::a::B`, `super::c`, `self::d::E`, or a
//! path starting at a child module) becomes an edge from the file it is in to the file that
//! defines what it names. A re-export (`pub use child::Item` in a `mod.rs`) is followed to the
//! file the item comes from, so naming `crate::pipeline::Router` is an edge to the router's
//! file, not to `pipeline/mod.rs`; `use super::kafka;` followed by `kafka::Sink` is an edge to
//! the file `Sink` comes from. `mod x;` declarations are not edges, and neither is code under
//! `#[cfg(test)]` (a unit test may drive its file through the API above it). Any strongly
//! connected set of two or more files is a circle, printed with one path for each edge in it.
//!
//! The lint tier runs this over every crate's `src/` (integration tests and binaries are other
//! crates as far as imports go).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use syn::visit::Visit;

/// The crates whose `src/` is checked.
pub const CRATES: [&str; 8] = [
    "common",
    "http",
    "central-ebpf",
    "central-user",
    "peer",
    "lab",
    "tests",
    "xtask",
];

/// A module path from the crate root (`["pipeline", "router"]`).
type ModPath = Vec<String>;

/// One source file of a crate and what it says.
struct File {
    path: PathBuf,
    /// Inline modules (`mod tests { … }`) by their full module path.
    inline: BTreeSet<ModPath>,
    /// `pub use` re-exports: (module the `use` is in, name it exports, absolute target path).
    reexports: Vec<(ModPath, String, ModPath)>,
    /// Paths the file names: (module the path is written in, path as written).
    refs: Vec<(ModPath, Vec<String>)>,
    /// Names `use` binds: (module, name, path as written).
    bindings: Vec<(ModPath, String, Vec<String>)>,
}

/// A crate's files by module path.
struct Crate {
    files: BTreeMap<ModPath, File>,
}

/// Checks every crate under `root`; an error lists each circle.
pub fn check(root: &Path) -> Result<()> {
    let mut report = String::new();
    for name in CRATES {
        let src = root.join(name).join("src");
        if !src.is_dir() {
            continue;
        }
        for circle in circles(&src)? {
            writeln!(report, "{name}: a circle of {} files:", circle.files.len())?;
            for (from, to, via) in &circle.edges {
                writeln!(report, "  {from} -> {to}  ({via})")?;
            }
        }
    }
    if report.is_empty() {
        println!("imports: every crate's files import one another as a tree");
        Ok(())
    } else {
        bail!("imports: circles between files (each edge names one path that makes it)\n{report}")
    }
}

/// Files that import one another in a circle.
#[derive(Debug)]
pub struct Circle {
    /// Relative to the crate's `src/`, sorted.
    pub files: Vec<String>,
    /// The edges between them: (from, to, a path that makes the edge).
    pub edges: Vec<(String, String, String)>,
}

/// The circles of the crate at `src`, sorted by their files.
pub fn circles(src: &Path) -> Result<Vec<Circle>> {
    let krate = Crate::load(src)?;
    let edges = krate.edges();
    let nodes: Vec<&ModPath> = krate.files.keys().collect();
    let index: BTreeMap<&ModPath, usize> = nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut adjacency = vec![Vec::new(); nodes.len()];
    for (from, to) in edges.keys() {
        adjacency[index[from]].push(index[to]);
    }
    let mut out: Vec<Circle> = strongly_connected(&adjacency)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut files: Vec<String> = c.iter().map(|&i| krate.show(nodes[i])).collect();
            files.sort();
            let edges = edges
                .iter()
                .filter(|((from, to), _)| c.contains(&index[from]) && c.contains(&index[to]))
                .map(|((from, to), via)| (krate.show(from), krate.show(to), via.clone()))
                .collect();
            Circle { files, edges }
        })
        .collect();
    out.sort_by(|a, b| a.files.cmp(&b.files));
    Ok(out)
}

impl Crate {
    fn load(src: &Path) -> Result<Self> {
        let mut files = BTreeMap::new();
        for root in ["lib.rs", "main.rs"] {
            let path = src.join(root);
            if path.is_file() {
                load_module(src, &path, Vec::new(), &mut files)?;
                break;
            }
        }
        Ok(Crate { files })
    }

    fn show(&self, module: &ModPath) -> String {
        let path = &self.files[module].path;
        path.display().to_string()
    }

    /// The file (by module path) that holds module `module`, inline modules included.
    fn file_of(&self, module: &[String]) -> Option<ModPath> {
        (0..=module.len()).rev().find_map(|n| {
            let prefix = &module[..n];
            if self.files.contains_key(prefix) {
                Some(prefix.to_vec())
            } else {
                None
            }
        })
    }

    /// Whether `module` is a module (a file or an inline module) of this crate.
    fn is_module(&self, module: &[String]) -> bool {
        self.files.contains_key(module) || self.files.values().any(|f| f.inline.contains(module))
    }

    /// The module an absolute path names (its longest module prefix), and the segment after it.
    fn resolve<'p>(&self, path: &'p [String]) -> (ModPath, Option<&'p String>) {
        let n = (0..=path.len())
            .rev()
            .find(|&n| self.is_module(&path[..n]))
            .unwrap_or(0);
        (path[..n].to_vec(), path.get(n))
    }

    /// The file that defines what `path` names, following re-exports.
    fn target(&self, path: &[String], depth: usize) -> Option<ModPath> {
        let (module, item) = self.resolve(path);
        let file = self.file_of(&module)?;
        if let Some(item) = item
            && depth < 8
            && let Some((_, _, to)) = self.files[&file]
                .reexports
                .iter()
                .find(|(m, name, _)| *m == module && name == item)
        {
            let mut to = to.clone();
            to.extend(path[module.len() + 1..].iter().cloned());
            return self.target(&to, depth + 1).or(Some(file));
        }
        Some(file)
    }

    /// Every file-to-file edge with one example path.
    fn edges(&self) -> BTreeMap<(ModPath, ModPath), String> {
        let mut edges = BTreeMap::new();
        for (from, file) in &self.files {
            // `use a::module;` binds a module: its edges are the paths written through it.
            let module_uses: Vec<(&ModPath, &String, ModPath)> = file
                .bindings
                .iter()
                .filter_map(|(scope, name, path)| {
                    let absolute = self.absolute(scope, path)?;
                    self.files
                        .contains_key(&absolute)
                        .then_some((scope, name, absolute))
                })
                .collect();
            for (scope, path) in &file.refs {
                if let Some(absolute) = self.absolute(scope, path)
                    && module_uses.iter().any(|(s, name, m)| {
                        *s == scope && *m == absolute && path.last() == Some(name)
                    })
                {
                    continue;
                }
                let through = path.first().and_then(|first| {
                    let (_, _, m) = module_uses
                        .iter()
                        .find(|(s, name, _)| *s == scope && *name == first)?;
                    let mut p = vec!["crate".to_owned()];
                    p.extend(m.iter().cloned());
                    p.extend(path[1..].iter().cloned());
                    Some(p)
                });
                let path = through.as_ref().unwrap_or(path);
                let Some(absolute) = self.absolute(scope, path) else {
                    continue;
                };
                if let Some(to) = self.target(&absolute, 0)
                    && to != *from
                {
                    edges
                        .entry((from.clone(), to))
                        .or_insert_with(|| path.join("::"));
                }
            }
        }
        edges
    }

    /// `path`, written in module `scope`, from the crate root; `None` if it leaves the crate.
    fn absolute(&self, scope: &[String], path: &[String]) -> Option<ModPath> {
        let first = path.first()?;
        let (mut base, rest) = match first.as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "self" => (scope.to_vec(), &path[1..]),
            "super" => {
                let mut base = scope.to_vec();
                let mut rest = path;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                (base, rest)
            }
            _ => {
                let mut child = scope.to_vec();
                child.push(first.clone());
                if !self.is_module(&child) {
                    return None;
                }
                (scope.to_vec(), path)
            }
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }
}

/// Reads `path` as module `module` and, recursively, the files of its `mod x;` children.
fn load_module(
    src: &Path,
    path: &Path,
    module: ModPath,
    files: &mut BTreeMap<ModPath, File>,
) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let ast = syn::parse_file(&text).with_context(|| format!("parse {}", path.display()))?;
    let mut collector = Collector {
        scope: module.clone(),
        inline: BTreeSet::new(),
        reexports: Vec::new(),
        refs: Vec::new(),
        bindings: Vec::new(),
        children: Vec::new(),
    };
    collector.visit_file(&ast);
    // A non-mod.rs file's children live in a directory named after it.
    let dir = match path.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs" | "lib.rs" | "main.rs") => path.parent().map(Path::to_path_buf),
        _ => Some(path.with_extension("")),
    }
    .context("module directory")?;
    let children = std::mem::take(&mut collector.children);
    files.insert(
        module.clone(),
        File {
            path: path.strip_prefix(src).unwrap_or(path).to_path_buf(),
            inline: collector.inline,
            reexports: collector.reexports,
            refs: collector.refs,
            bindings: collector.bindings,
        },
    );
    for (child_scope, name, explicit) in children {
        // `#[path]` children and children of inline modules: looked up as written.
        let relative: PathBuf = child_scope[module.len()..].iter().collect();
        let file = match explicit {
            // `#[path]` is relative to the declaring file's own directory.
            Some(p) => path.parent().unwrap_or(src).join(relative).join(p),
            None => {
                let flat = dir.join(&relative).join(format!("{name}.rs"));
                if flat.is_file() {
                    flat
                } else {
                    dir.join(&relative).join(&name).join("mod.rs")
                }
            }
        };
        let mut child = child_scope.clone();
        child.push(name);
        load_module(src, &file, child, files)?;
    }
    Ok(())
}

/// Walks one file, recording modules, re-exports and paths with the module they appear in.
struct Collector {
    scope: ModPath,
    inline: BTreeSet<ModPath>,
    reexports: Vec<(ModPath, String, ModPath)>,
    refs: Vec<(ModPath, Vec<String>)>,
    bindings: Vec<(ModPath, String, Vec<String>)>,
    /// `mod x;` declarations: (module they are in, name, `#[path]` if any).
    children: Vec<(ModPath, String, Option<String>)>,
}

impl Collector {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, public: bool) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, public);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                self.leaf(prefix, &name, &name, public);
            }
            syn::UseTree::Rename(r) => {
                self.leaf(prefix, &r.ident.to_string(), &r.rename.to_string(), public);
            }
            syn::UseTree::Glob(_) => self.refs.push((self.scope.clone(), prefix.clone())),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, public);
                }
            }
        }
    }

    fn leaf(&mut self, prefix: &[String], name: &str, exported_as: &str, public: bool) {
        let mut path = prefix.to_vec();
        if name != "self" {
            path.push(name.to_owned());
        }
        if public {
            let mut absolute = self.scope.clone();
            match path.first().map(String::as_str) {
                Some("crate") => absolute = path[1..].to_vec(),
                Some("self") => absolute.extend(path[1..].iter().cloned()),
                Some("super") => {
                    let mut rest = &path[..];
                    while rest.first().is_some_and(|s| s == "super") {
                        absolute.pop();
                        rest = &rest[1..];
                    }
                    absolute.extend(rest.iter().cloned());
                }
                _ => absolute.extend(path.iter().cloned()),
            }
            let exported = if name == "self" {
                prefix.last().cloned().unwrap_or_default()
            } else {
                exported_as.to_owned()
            };
            self.reexports
                .push((self.scope.clone(), exported, absolute));
        }
        let bound = if name == "self" {
            prefix.last().cloned().unwrap_or_default()
        } else {
            exported_as.to_owned()
        };
        self.bindings
            .push((self.scope.clone(), bound, path.clone()));
        self.refs.push((self.scope.clone(), path));
    }
}

/// `#[cfg(test)]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
    })
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_test(&m.attrs) {
            return;
        }
        let name = m.ident.to_string();
        if m.content.is_some() {
            self.scope.push(name);
            self.inline.insert(self.scope.clone());
            syn::visit::visit_item_mod(self, m);
            self.scope.pop();
        } else {
            let explicit = m.attrs.iter().find_map(|a| {
                let syn::Meta::NameValue(nv) = &a.meta else {
                    return None;
                };
                if !nv.path.is_ident("path") {
                    return None;
                }
                match &nv.value {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) => Some(s.value()),
                    _ => None,
                }
            });
            self.children.push((self.scope.clone(), name, explicit));
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if is_test(&u.attrs) {
            return;
        }
        let public = !matches!(u.vis, syn::Visibility::Inherited);
        self.use_tree(&mut Vec::new(), &u.tree, public);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() && p.segments.len() > 1 {
            let path = p.segments.iter().map(|s| s.ident.to_string()).collect();
            self.refs.push((self.scope.clone(), path));
        }
        syn::visit::visit_path(self, p);
    }
}

/// Tarjan's strongly connected components of a graph given as adjacency lists.
fn strongly_connected(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        adjacency: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn connect(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.adjacency[v] {
            match s.index[w] {
                None => {
                    connect(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(i) if s.on_stack[w] => s.low[v] = s.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let n = adjacency.len();
    let mut s = State {
        adjacency,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            connect(&mut s, v);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files of each circle of the crate at `src`.
    fn circle_files(src: &Path) -> Vec<Vec<String>> {
        circles(src)
            .expect("circles")
            .into_iter()
            .map(|c| c.files)
            .collect()
    }

    /// A crate under a fresh temporary directory, from (relative path, text) pairs.
    struct Fixture(PathBuf);

    impl Fixture {
        fn new(name: &str, files: &[(&str, &str)]) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xtask-imports-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for (path, text) in files {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(path, text).expect("write");
            }
            Fixture(dir)
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PIPELINE_WITH_CLOCK: &str = "mod shard;\npub fn now() -> u64 { 0 }\n\
        pub fn start() { shard::run(); }\n";

    #[test]
    fn a_child_using_its_parents_item_is_a_circle() {
        let f = Fixture::new(
            "up",
            &[
                ("lib.rs", "pub mod pipeline;\n"),
                ("pipeline/mod.rs", PIPELINE_WITH_CLOCK),
                (
                    "pipeline/shard.rs",
                    "pub fn run() { let _ = super::now(); }\n",
                ),
            ],
        );
        assert_eq!(
            circle_files(&f.0),
            vec![vec![
                "pipeline/mod.rs".to_owned(),
                "pipeline/shard.rs".to_owned()
            ]]
        );
        // The report names the path behind each edge.
        let s = |v: &str| v.to_owned();
        assert_eq!(
            circles(&f.0).expect("circles")[0].edges,
            vec![
                (
                    s("pipeline/mod.rs"),
                    s("pipeline/shard.rs"),
                    s("shard::run")
                ),
                (
                    s("pipeline/shard.rs"),
                    s("pipeline/mod.rs"),
                    s("super::now")
                ),
            ]
        );
    }

    #[test]
    fn the_same_crate_with_the_clock_in_a_leaf_is_a_tree() {
        let f = Fixture::new(
            "leaf",
            &[
                ("lib.rs", "pub mod clock;\npub mod pipeline;\n"),
                ("clock.rs", "pub fn now() -> u64 { 0 }\n"),
                (
                    "pipeline/mod.rs",
                    "mod shard;\npub fn start() { shard::run(); }\n",
                ),
                (
                    "pipeline/shard.rs",
                    "use crate::clock::now;\npub fn run() { let _ = now(); }\n\
                     #[cfg(test)]\nmod tests { use super::*; }\n",
                ),
            ],
        );
        assert!(circle_files(&f.0).is_empty());
    }

    #[test]
    fn a_reexport_is_followed_to_the_file_that_defines_the_item() {
        // `crate::pipeline::Router` is re-exported by pipeline/mod.rs from router.rs: ingest
        // depends on router.rs, so pipeline/mod.rs may wire ingest without a circle.
        let files = [
            ("lib.rs", "pub mod ingest;\npub mod pipeline;\n"),
            (
                "pipeline/mod.rs",
                "mod router;\npub use router::Router;\npub fn start() { crate::ingest::run(); }\n",
            ),
            ("pipeline/router.rs", "pub struct Router;\n"),
            (
                "ingest.rs",
                "use crate::pipeline::Router;\npub fn run() -> Option<Router> { None }\n",
            ),
        ];
        assert!(circle_files(&Fixture::new("reexport", &files).0).is_empty());
        // The same, but the router is defined in pipeline/mod.rs itself: a circle.
        let mut inline = files;
        inline[1].1 = "pub struct Router;\npub fn start() { crate::ingest::run(); }\n";
        let f = Fixture::new("defined", &inline[..3]);
        std::fs::write(f.0.join("ingest.rs"), files[3].1).expect("write");
        std::fs::remove_file(f.0.join("pipeline/router.rs")).expect("rm");
        assert_eq!(
            circle_files(&f.0),
            vec![vec!["ingest.rs".to_owned(), "pipeline/mod.rs".to_owned()]]
        );
    }

    #[test]
    fn a_module_bound_by_use_is_followed_and_test_code_is_not_an_edge() {
        let f = Fixture::new(
            "alias",
            &[
                ("lib.rs", "pub mod config;\npub mod kafka;\n"),
                (
                    "config.rs",
                    "use crate::kafka;\npub struct Config(kafka::KafkaConfig);\n",
                ),
                (
                    "kafka/mod.rs",
                    "mod config;\nmod sink;\npub use config::KafkaConfig;\npub use sink::Sink;\n",
                ),
                ("kafka/config.rs", "pub struct KafkaConfig;\n"),
                (
                    "kafka/sink.rs",
                    "pub struct Sink;\n#[cfg(test)]\nmod tests { use crate::config::Config; }\n",
                ),
            ],
        );
        assert!(circle_files(&f.0).is_empty());
        // The same path written in code, not under cfg(test): a circle through config.rs.
        std::fs::write(
            f.0.join("kafka/sink.rs"),
            "pub struct Sink(Option<Box<crate::config::Config>>);\n",
        )
        .expect("write");
        std::fs::write(
            f.0.join("config.rs"),
            "use crate::kafka;\npub struct Config(kafka::KafkaConfig, kafka::Sink);\n",
        )
        .expect("write");
        assert_eq!(
            circle_files(&f.0),
            vec![vec!["config.rs".to_owned(), "kafka/sink.rs".to_owned()]]
        );
    }

    #[test]
    fn siblings_that_name_each_other_are_a_circle_and_external_paths_are_not_edges() {
        let f = Fixture::new(
            "siblings",
            &[
                (
                    "main.rs",
                    "mod a;\nmod b;\nfn main() { std::process::exit(0) }\n",
                ),
                ("a.rs", "use crate::b::B;\npub struct A(Option<B>);\n"),
                ("b.rs", "pub struct B(Option<Box<crate::a::A>>);\n"),
            ],
        );
        assert_eq!(
            circle_files(&f.0),
            vec![vec!["a.rs".to_owned(), "b.rs".to_owned()]]
        );
    }
}
