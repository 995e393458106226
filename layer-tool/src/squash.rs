//! `layer-tool squash IMAGE --name NEW`: an image's layers flattened into one layer that shows
//! the same tree as the union of the stack.
//!
//! Each layer, bottom first, is written as its tar and applied onto one tree by the extractor
//! in apply mode (whiteouts delete, opaque markers empty what lower layers put there): the same
//! code path that unpacks foreign layers, so squash and import agree on the rules.

use std::fs;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};

use anyhow::{Context, Result};

use crate::extract::{extract, ExtractOptions};
use crate::store::{validate_image_name, History, Image, Provenance, Store};
use crate::{progress, tarball};

/// Flatten image `name_or_path` into the new image `new_name`, which has one layer.
pub fn squash(
    store: &Store,
    name_or_path: &str,
    new_name: &str,
    show_progress: bool,
) -> Result<Image> {
    validate_image_name(new_name)?;
    let (image_dir, image) = store.find_image(name_or_path)?;
    let staging = store.staging_dir("squash")?;
    let root = staging.path().join("layer");
    fs::create_dir(&root).with_context(|| format!("mkdir {}", root.display()))?;
    let bar = progress::steps(
        show_progress,
        image.layers.len() as u64,
        "squashing".to_string(),
    );
    let opts = ExtractOptions {
        apply_whiteouts: true,
        ..ExtractOptions::default()
    };
    for layer in &image.layers {
        let dir = image_dir.join(&layer.path);
        let tar_path = staging.path().join("layer.tar");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tar_path)
            .with_context(|| format!("creating {}", tar_path.display()))?;
        let (writer, _, _) = tarball::write_layer(&dir, BufWriter::new(&mut file))?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", tar_path.display()))?;
        file.seek(SeekFrom::Start(0))
            .with_context(|| format!("rewinding {}", tar_path.display()))?;
        extract(BufReader::new(file), &root, &opts)
            .with_context(|| format!("applying layer {} ({})", layer.digest, dir.display()))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let installed = store.install_layer(&root)?;
    let squashed = Image {
        name: new_name.to_string(),
        layers: vec![store.layer_ref(&installed.digest)?],
        config: image.config.clone(),
        provenance: squashed_provenance(&image),
    };
    store.save_image(&squashed)?;
    Ok(squashed)
}

/// A squashed image is new (created now) and made by one step, which names what it flattened.
fn squashed_provenance(from: &Image) -> Provenance {
    let created = crate::provenance::timestamp(None);
    Provenance {
        created: Some(created.clone()),
        history: vec![History {
            created: Some(created),
            created_by: Some("layer-tool squash".to_string()),
            comment: Some(format!(
                "{} layers of {} in one",
                from.layers.len(),
                from.name
            )),
            ..History::default()
        }],
    }
}
