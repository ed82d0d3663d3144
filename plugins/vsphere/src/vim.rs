//! The vSphere API calls the plugin makes, over [`crate::soap`]: the service content,
//! login and logout, finding inventory objects by name, reading properties, creating a
//! VM, marking it a template, destroying it, deleting datastore files, and waiting for
//! tasks.
//!
//! Objects are found with a `ContainerView` and `RetrievePropertiesEx` (the way govc and
//! pyVmomi do), scoped to one datacenter, so same-named objects elsewhere never match.

use std::time::{Duration, Instant};

use cloudkit::http::TlsTrust;

use crate::soap::{esc, Elem, MoRef, Soap, VimError};

/// What `RetrieveServiceContent` answers that the plugin uses.
#[derive(Debug, Clone)]
pub struct ServiceContent {
    pub root_folder: MoRef,
    pub property_collector: MoRef,
    pub view_manager: MoRef,
    pub session_manager: MoRef,
    pub file_manager: MoRef,
    /// `VirtualCenter` or `HostAgent`.
    pub api_type: String,
    pub full_name: String,
}

/// One logged-in (or not yet logged-in) vSphere connection.
pub struct Vim {
    pub soap: Soap,
    pub sc: ServiceContent,
}

/// One task state poll interval (the simulator's tasks finish at once; vCenter's take
/// seconds).
const TASK_POLL: Duration = Duration::from_millis(300);

fn moref_at(e: &Elem, name: &str) -> Result<MoRef, VimError> {
    e.child(name).and_then(Elem::moref).ok_or_else(|| VimError::BadAnswer {
        method: "RetrieveServiceContent".into(),
        detail: format!("no {name} in the service content"),
    })
}

impl Vim {
    /// Connects to `base` (`https://host[:port]`), accepting the certificates `trust`
    /// accepts, and reads the service content.
    pub fn connect(base: &str, trust: &TlsTrust) -> Result<Vim, VimError> {
        let soap = Soap::new(base, trust)?;
        let r = soap.call("RetrieveServiceContent", "<_this type=\"ServiceInstance\">ServiceInstance</_this>")?;
        let rv = r.child("returnval").ok_or_else(|| VimError::BadAnswer {
            method: "RetrieveServiceContent".into(),
            detail: "no returnval".into(),
        })?;
        let sc = ServiceContent {
            root_folder: moref_at(rv, "rootFolder")?,
            property_collector: moref_at(rv, "propertyCollector")?,
            view_manager: moref_at(rv, "viewManager")?,
            session_manager: moref_at(rv, "sessionManager")?,
            file_manager: moref_at(rv, "fileManager")?,
            api_type: rv.text_at("about/apiType").unwrap_or("").to_string(),
            full_name: rv.text_at("about/fullName").unwrap_or("vSphere").to_string(),
        };
        Ok(Vim { soap, sc })
    }

    /// Logs in; the session cookie is kept for every later call.
    pub fn login(&self, username: &str, password: &str) -> Result<(), VimError> {
        let inner = format!(
            "{}<userName>{}</userName><password>{}</password>",
            self.sc.session_manager.xml("_this"),
            esc(username),
            esc(password)
        );
        self.soap.call("Login", &inner).map(|_| ())
    }

    /// Ends the session (best effort: the caller ignores a failure).
    pub fn logout(&self) -> Result<(), VimError> {
        let r = self.soap.call("Logout", &self.sc.session_manager.xml("_this"));
        self.soap.forget_session();
        r.map(|_| ())
    }

    /// Every object of `kinds` under `container` (recursively) with its `name`.
    pub fn find_all(&self, container: &MoRef, kinds: &[&str]) -> Result<Vec<(MoRef, String)>, VimError> {
        let types: String = kinds.iter().map(|k| format!("<type>{}</type>", esc(k))).collect();
        let inner = format!(
            "{}{}{types}<recursive>true</recursive>",
            self.sc.view_manager.xml("_this"),
            container.xml("container")
        );
        let r = self.soap.call("CreateContainerView", &inner)?;
        let view = r.child("returnval").and_then(Elem::moref).ok_or_else(|| VimError::BadAnswer {
            method: "CreateContainerView".into(),
            detail: "no view in the answer".into(),
        })?;
        let prop_specs: String = kinds
            .iter()
            .map(|k| format!("<propSet><type>{}</type><pathSet>name</pathSet></propSet>", esc(k)))
            .collect();
        let spec = format!(
            "<specSet>{prop_specs}<objectSet>{}<skip>true</skip><selectSet xsi:type=\"TraversalSpec\">\
             <name>traverseView</name><type>ContainerView</type><path>view</path><skip>false</skip></selectSet>\
             </objectSet></specSet>",
            view.xml("obj")
        );
        let result = self.retrieve(&spec);
        let _ = self.soap.call("DestroyView", &view.xml("_this"));
        let mut out = Vec::new();
        for obj in result? {
            let Some(mo) = obj.child("obj").and_then(Elem::moref) else { continue };
            let name = obj
                .all("propSet")
                .find(|p| p.text_at("name") == Some("name"))
                .and_then(|p| p.child("val"))
                .map(|v| v.text.clone())
                .unwrap_or_default();
            out.push((mo, name));
        }
        Ok(out)
    }

    /// The one object of `kinds` named `name` under `container`.
    pub fn find_by_name(&self, container: &MoRef, kinds: &[&str], name: &str) -> Result<Option<MoRef>, VimError> {
        Ok(self.find_all(container, kinds)?.into_iter().find(|(_, n)| n == name).map(|(m, _)| m))
    }

    /// `RetrievePropertiesEx` with `spec` (a `<specSet>`), following continuation tokens.
    fn retrieve(&self, spec: &str) -> Result<Vec<Elem>, VimError> {
        let pc = self.sc.property_collector.xml("_this");
        let r = self.soap.call("RetrievePropertiesEx", &format!("{pc}{spec}<options></options>"))?;
        let mut objects = Vec::new();
        let mut next = r.child("returnval").cloned();
        while let Some(rv) = next.take() {
            objects.extend(rv.all("objects").cloned());
            if let Some(token) = rv.child("token").map(|t| t.text.clone()).filter(|t| !t.is_empty()) {
                let r =
                    self.soap.call("ContinueRetrievePropertiesEx", &format!("{pc}<token>{}</token>", esc(&token)))?;
                next = r.child("returnval").cloned();
            }
        }
        Ok(objects)
    }

    /// The properties `paths` of `obj`, as `(path, value element)` pairs; unset
    /// properties are absent.
    pub fn properties(&self, obj: &MoRef, paths: &[&str]) -> Result<Vec<(String, Elem)>, VimError> {
        let path_set: String = paths.iter().map(|p| format!("<pathSet>{}</pathSet>", esc(p))).collect();
        let spec = format!(
            "<specSet><propSet><type>{}</type>{path_set}</propSet><objectSet>{}<skip>false</skip></objectSet></specSet>",
            esc(&obj.kind),
            obj.xml("obj")
        );
        let mut out = Vec::new();
        for o in self.retrieve(&spec)? {
            for p in o.all("propSet") {
                if let (Some(name), Some(val)) = (p.text_at("name"), p.child("val")) {
                    out.push((name.to_string(), val.clone()));
                }
            }
        }
        Ok(out)
    }

    /// One property of `obj`, or `None` when unset.
    pub fn property(&self, obj: &MoRef, path: &str) -> Result<Option<Elem>, VimError> {
        Ok(self.properties(obj, &[path])?.into_iter().find(|(n, _)| n == path).map(|(_, v)| v))
    }

    /// A managed-object-valued property of `obj`; an error naming it when unset.
    pub fn moref_property(&self, obj: &MoRef, path: &str) -> Result<MoRef, VimError> {
        self.property(obj, path)?
            .and_then(|v| v.moref())
            .ok_or_else(|| VimError::NotFound(format!("{obj} has no {path}")))
    }

    /// Calls a method that returns a task, and waits for the task (at most `timeout`).
    /// Returns the task's result element, when it has one.
    pub fn run_task(
        &self,
        method: &str,
        inner: &str,
        timeout: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Elem>, VimError> {
        let r = self.soap.call(method, inner)?;
        let task = r.child("returnval").and_then(Elem::moref).ok_or_else(|| VimError::BadAnswer {
            method: method.to_string(),
            detail: "no task in the answer".into(),
        })?;
        self.wait_task(&task, timeout, cancelled)
    }

    /// Waits until `task` succeeds or fails.
    pub fn wait_task(
        &self,
        task: &MoRef,
        timeout: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Elem>, VimError> {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.property(task, "info")?.ok_or_else(|| VimError::BadAnswer {
                method: "RetrievePropertiesEx".into(),
                detail: format!("task {} has no info", task.value),
            })?;
            match info.text_at("state") {
                Some("success") => return Ok(info.child("result").cloned()),
                Some("error") => {
                    let err = info.child("error");
                    let fault = err.and_then(|e| e.child("fault")).and_then(|f| f.xsi_type.clone());
                    let msg = err.and_then(|e| e.text_at("localizedMessage")).filter(|m| !m.is_empty());
                    let message = match (fault, msg) {
                        (Some(f), Some(m)) => format!("{f}: {m}"),
                        (Some(f), None) => f,
                        (None, Some(m)) => m.to_string(),
                        (None, None) => "no reason given".to_string(),
                    };
                    let name = info.text_at("descriptionId").unwrap_or(&task.value).to_string();
                    return Err(VimError::Task { task: name, message });
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(VimError::TaskTimeout { task: task.value.clone(), secs: timeout.as_secs() });
            }
            if cancelled() {
                return Err(VimError::Cancelled);
            }
            std::thread::sleep(TASK_POLL);
        }
    }

    /// Deletes a datastore file or folder (`[ds] path`); `Ok(false)` when it was not there.
    pub fn delete_datastore_file(&self, path: &str, datacenter: &MoRef, timeout: Duration) -> Result<bool, VimError> {
        let inner =
            format!("{}<name>{}</name>{}", self.sc.file_manager.xml("_this"), esc(path), datacenter.xml("datacenter"));
        match self.run_task("DeleteDatastoreFile_Task", &inner, timeout, &|| false) {
            Ok(_) => Ok(true),
            Err(VimError::Task { message, .. }) if message.starts_with("FileNotFound") => Ok(false),
            Err(e @ VimError::Fault { .. }) if e.fault() == Some("FileNotFound") => Ok(false),
            Err(e) => Err(e),
        }
    }
}
