//! Domain words shared by every module: task types, statuses, vendor kinds.
//!
//! These are the names of DESIGN.md; each type converts to and from the exact string used in
//! the config, the database and the API, so no module invents its own spelling.

use std::fmt;
use std::str::FromStr;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} `{}` (expected one of: {})",
                        stringify!($name),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum!(
    /// What a job asks of the vendors.
    TaskType {
        Preload => "preload",
        RefreshFile => "refresh_file",
        RefreshDir => "refresh_dir",
    }
);

string_enum!(
    /// The life of a plan (ESA: execution). See DESIGN.md, scheduling semantics 3.
    PlanStatus {
        Waiting => "waiting",
        Running => "running",
        Finished => "finished",
        Stopped => "stopped",
        Failed => "failed",
    }
);

string_enum!(
    /// The durable state machine of a slice and of each of its subtasks.
    SubmitStatus {
        Pending => "pending",
        Submitting => "submitting",
        Submitted => "submitted",
        Done => "done",
        Failed => "failed",
    }
);

string_enum!(
    /// The outcome of one URL at one vendor account.
    UrlStatus {
        Pending => "pending",
        Done => "done",
        Failed => "failed",
        Unknown => "unknown",
    }
);

string_enum!(
    /// How a plan treats slices missed while the daemon was down.
    CatchUp {
        Skip => "skip",
        Burst => "burst",
    }
);

string_enum!(
    /// Where a job came from: the config file (declarative) or the API.
    JobSource {
        Config => "config",
        Api => "api",
    }
);

string_enum!(
    /// The vendor protocols preloadd speaks.
    VendorKind {
        AliyunCdn => "aliyun_cdn",
        AliyunEsa => "aliyun_esa",
        VolcengineCdn => "volcengine_cdn",
        TencentCdn => "tencent_cdn",
        HttpWarm => "http_warm",
        Webhook => "webhook",
    }
);

impl SubmitStatus {
    /// A subtask in one of these states has been "recorded": the cursor may move past its slice.
    pub fn is_recorded(self) -> bool {
        matches!(self, SubmitStatus::Submitted | SubmitStatus::Done | SubmitStatus::Failed)
    }

    pub fn is_final(self) -> bool {
        matches!(self, SubmitStatus::Done | SubmitStatus::Failed)
    }
}

impl PlanStatus {
    /// Plans in these states may still send slices, so they take part in the overlap rule.
    pub fn is_open(self) -> bool {
        matches!(self, PlanStatus::Waiting | PlanStatus::Running | PlanStatus::Stopped)
    }
}
