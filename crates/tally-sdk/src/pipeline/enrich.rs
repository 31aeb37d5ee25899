//! Enrichment: the `context` every message carries (app, device, OS,
//! locale, time zone, library).
//!
//! Contract: a [`ContextProvider`] is asked once, when the tracker is built;
//! its answer becomes a template that the pipeline copies into every
//! message before `context.tally` is filled in. Providing context cannot
//! fail: a value the platform does not know is left out. Nothing sensitive
//! is collected by design: no IP address, no device name, no advertising
//! or hardware identifier, no user account.
//!
//! Mobile apps pass their platform's values through their own provider; the
//! default reads what a desktop or server build can see without asking.

use std::fmt;

use tally_proto::{App, Context, Device, Library, Os};

/// The SDK's own name in `context.library`.
pub const LIBRARY_NAME: &str = "tally-sdk";

/// The non-sensitive facts about where the app runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceContext {
    /// App name.
    pub app_name: Option<String>,
    /// App marketing version.
    pub app_version: Option<String>,
    /// App build number.
    pub app_build: Option<String>,
    /// Bundle id or package name.
    pub app_namespace: Option<String>,
    /// Device manufacturer.
    pub manufacturer: Option<String>,
    /// Device model (`Pixel 8`): a model, never the user's device name.
    pub model: Option<String>,
    /// Device class (`ios`, `android`, `desktop`, `server`).
    pub device_type: Option<String>,
    /// OS name.
    pub os_name: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
    /// BCP 47 locale (`en-GB`).
    pub locale: Option<String>,
    /// IANA time zone (`Europe/Paris`).
    pub timezone: Option<String>,
}

/// Supplies the device context; the host app may override the default.
pub trait ContextProvider: Send + Sync + fmt::Debug {
    /// The context to stamp on messages.
    fn device_context(&self) -> DeviceContext;
}

/// What a desktop or server process can learn about itself: OS name and
/// kernel version, `LANG` as locale, `TZ` (or `/etc/timezone`) as time zone,
/// and the executable's file name as the app name.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultContextProvider;

impl ContextProvider for DefaultContextProvider {
    fn device_context(&self) -> DeviceContext {
        DeviceContext {
            app_name: std::env::current_exe()
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())),
            device_type: Some(if cfg!(any(target_os = "ios", target_os = "android")) {
                std::env::consts::OS.to_owned()
            } else {
                "desktop".to_owned()
            }),
            os_name: Some(std::env::consts::OS.to_owned()),
            os_version: read_trimmed("/proc/sys/kernel/osrelease"),
            locale: std::env::var("LANG")
                .ok()
                .and_then(|l| bcp47_from_posix(&l)),
            timezone: std::env::var("TZ")
                .ok()
                .map(|tz| tz.trim_start_matches(':').to_owned())
                .filter(|tz| !tz.is_empty())
                .or_else(|| read_trimmed("/etc/timezone")),
            ..DeviceContext::default()
        }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// `en_GB.UTF-8` → `en-GB`; `C` and `POSIX` say nothing about the user.
fn bcp47_from_posix(lang: &str) -> Option<String> {
    let base = lang.split(['.', '@']).next().unwrap_or_default();
    if base.is_empty() || base == "C" || base == "POSIX" {
        return None;
    }
    Some(base.replace('_', "-"))
}

/// The `context` template for every message.
pub fn context_template(device: &DeviceContext) -> Context {
    let app = App {
        name: device.app_name.clone(),
        version: device.app_version.clone(),
        build: device.app_build.clone(),
        namespace: device.app_namespace.clone(),
        ..App::default()
    };
    let dev = Device {
        manufacturer: device.manufacturer.clone(),
        model: device.model.clone(),
        device_type: device.device_type.clone(),
        ..Device::default()
    };
    let os = Os {
        name: device.os_name.clone(),
        version: device.os_version.clone(),
        ..Os::default()
    };
    Context {
        app: (app != App::default()).then_some(app),
        device: (dev != Device::default()).then_some(dev),
        os: (os != Os::default()).then_some(os),
        library: Some(Library {
            name: Some(LIBRARY_NAME.to_owned()),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            ..Library::default()
        }),
        locale: device.locale.clone(),
        timezone: device.timezone.clone(),
        ..Context::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_locales_become_bcp47() {
        assert_eq!(bcp47_from_posix("en_GB.UTF-8").as_deref(), Some("en-GB"));
        assert_eq!(bcp47_from_posix("de_DE@euro").as_deref(), Some("de-DE"));
        assert_eq!(bcp47_from_posix("C.UTF-8"), None);
        assert_eq!(bcp47_from_posix("POSIX"), None);
    }

    #[test]
    fn template_carries_the_library_and_nothing_unknown() {
        let ctx = context_template(&DeviceContext {
            app_name: Some("shop".into()),
            os_name: Some("linux".into()),
            ..DeviceContext::default()
        });
        let json = serde_json::to_string(&ctx).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"app":{{"name":"shop"}},"os":{{"name":"linux"}},"library":{{"name":"tally-sdk","version":"{}"}}}}"#,
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
