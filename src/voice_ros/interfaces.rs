//! Build-script helper (`#[path]`-included by node crates' build.rs):
//! whether an optional interface package is in the ROS prefix r2r generates
//! bindings from, so code that needs it is compiled exactly when r2r has it.

/// Emits `cargo:rustc-cfg=<cfg>` when `share/<pkg>/<idl>` exists under a
/// prefix of AMENT_PREFIX_PATH and IDL_PACKAGE_FILTER (when set) names `pkg`.
pub fn cfg_if_found(cfg: &str, pkg: &str, idl: &str) -> bool {
    println!("cargo::rustc-check-cfg=cfg({cfg})");
    println!("cargo:rerun-if-env-changed=AMENT_PREFIX_PATH");
    println!("cargo:rerun-if-env-changed=IDL_PACKAGE_FILTER");
    // r2r generates only the packages in IDL_PACKAGE_FILTER when it is set
    let filtered_out = std::env::var("IDL_PACKAGE_FILTER")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .is_some_and(|f| !f.split(';').any(|p| p.trim() == pkg));
    let found = std::env::var("AMENT_PREFIX_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .any(|p| {
            std::path::Path::new(p)
                .join("share")
                .join(pkg)
                .join(idl)
                .exists()
        });
    let on = found && !filtered_out;
    if on {
        println!("cargo:rustc-cfg={cfg}");
    }
    on
}
