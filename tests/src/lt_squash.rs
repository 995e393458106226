//! Property 5 through `layer-tool`'s own squash (`layer_tool::squash::squash`): the branches
//! become an image (bottom first, layers named by absolute path) in a private store, the image
//! is squashed to one layer, and that layer's tree is returned.
//!
//! A layer tar keeps whole-second mtimes and no xattrs, and a layer root is always 0755 root:
//! [`tar_visible`] drops what a layer cannot hold before views are compared.

use std::path::{Path, PathBuf};

use layer_tool::store::{Image, ImageConfig, LayerRef, Store};

use crate::view::View;

/// Squash `branches` (top first) with layer-tool; the squashed layer's directory.
pub fn squash(branches: &[PathBuf], scratch: &Path) -> Result<PathBuf, String> {
    let store = Store::at(scratch.join("store"));
    let layers = branches
        .iter()
        .rev()
        .enumerate()
        .map(|(i, b)| LayerRef {
            digest: format!("sha256:{i:064x}"),
            path: b.clone(),
        })
        .collect();
    let image = Image {
        name: "stack".into(),
        layers,
        config: ImageConfig::default(),
        provenance: Default::default(),
    };
    let dir = scratch.join("image");
    image.save(&dir).map_err(|e| format!("{e:#}"))?;
    let out = layer_tool::squash::squash(&store, &dir.to_string_lossy(), "squashed", false)
        .map_err(|e| format!("layer-tool squash: {e:#}"))?;
    let layer = &out.layers[0];
    store
        .layer_path(&layer.digest)
        .map_err(|e| format!("{e:#}"))
}

/// The part of a view a layer tar carries: no xattrs, mtimes in whole seconds, root attrs
/// not compared, symlinks' link groups not compared.
pub fn tar_visible(v: &View) -> View {
    let mut v = v.clone();
    for (p, e) in v.entries.iter_mut() {
        e.meta.xattrs.clear();
        e.mtime = e.mtime.map(|t| t - t.rem_euclid(1_000_000_000));
        // layer-tool writes every symlink as its own entry: hardlinked symlinks come apart
        // (reported; not a union rule).
        if matches!(e.kind, crate::view::VKind::Symlink(_)) {
            e.nlink = None;
            e.group = None;
        }
        if p.is_empty() {
            e.meta = crate::model::Meta::new(0o755, 0, 0);
        }
    }
    v
}

/// The squashed layer as the union would show it: `.wh.` names (bookkeeping that
/// layer-tool carries over, such as `.wh..wh.plnk`) and what lies under them left out.
pub fn as_union(mut v: View) -> View {
    v.entries
        .retain(|p, _| !p.split('/').any(crate::model::is_hidden_name));
    v
}
