// The EHR's languages over the isoguard service: a FHIR R4 facade under /fhir
// (application/fhir+json), the HL7 US Medication REMS `$rems-etasu` operation, and CDS Hooks
// 2.0 services under /cds-services. docs/fhir.md describes what each route does.
//
// Handlers are thin, like the native API's: decode the FHIR or CDS Hooks JSON into events or
// service calls (fhir_resources.h, cds_hooks.h), call the Service with the authenticated
// principal, encode the answer. Every call but the public ones (the CapabilityStatement and
// the CDS Hooks discovery) authenticates the bearer token and is written to the access audit
// with the patient it touched and its outcome; CDS Hooks feedback is recorded there too. The
// CDS services also take a trusted CDS client's signed JWT (cds_auth.h), which acts for the
// account the configuration names; its iss is written in the audit record's detail.
// Errors are OperationOutcome resources (FHIR) and carry the same HTTP status as the native
// API's problem details (problem.h's one mapping).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "core/result.h"
#include "fhir/fhir_knowledge.h"
#include "server/api.h"
#include "server/router.h"

namespace isoguard::fhir {

class CdsClients;

// Fetches `url` (a FHIR read or search on the EHR's server) with `Authorization: Bearer
// <access_token>` when the token is not empty; the answer's body, or an Error (a timeout, a
// refused connection, a non-2xx status).
using FhirFetcher = std::function<Result<std::string>(
    const std::string& url, const std::string& access_token, std::chrono::milliseconds timeout)>;

struct FhirOptions {
  FhirKnowledge knowledge;
  // The absolute base of the FHIR endpoint in links ("https://isoguard.example/fhir"); empty:
  // "http://<Host header>/fhir".
  std::string base_url;
  // The patient page of the web app for CDS Hooks cards: "{patient_id}" is replaced; a path
  // is made absolute on the server's own origin.
  std::string patient_page = "/#/patient/{patient_id}";
  // CDS Hooks prefetch missing from a request is fetched from the request's fhirServer with
  // this deadline; null: never fetched (the cards then rest on isoguard's record alone).
  FhirFetcher fetch;
  std::chrono::milliseconds fetch_timeout{2000};
  // The CDS clients trusted by their signed JWT (cds_auth.h, `--cds-clients`); null: the CDS
  // services take isoguard API tokens only. Either way an isoguard token is taken.
  std::shared_ptr<const CdsClients> cds_clients;
};

// Largest transaction Bundle (entries) and search page the facade takes.
inline constexpr size_t kMaxBundleEntries = 1000;
inline constexpr size_t kMaxSearchCount = 1000;
inline constexpr size_t kDefaultSearchCount = 50;

// Adds the routes; they call into the returned object, which must outlive the router's use.
// `env` must outlive it too.
std::shared_ptr<void> AddFhirRoutes(server::Router& router, server::ApiEnvironment& env,
                                    FhirOptions options);

// The FhirFetcher of `isoguard serve` (fhir_client.cpp): http:// and https://, HTTP/1.0, at
// most 10 MiB, one deadline for every step. An https server's certificate must chain to a
// certificate of `ca_file` (a PEM bundle; `--fhir-ca-file`), or of the system trust store when
// it is empty, and name the URL's host. Errors are kUnavailable with field "fhirServer" (a
// timeout, a refused connection, a certificate not trusted, a host name mismatch, a non-2xx
// status); a `ca_file` that cannot be read is kBadInput naming --fhir-ca-file.
Result<FhirFetcher> MakeHttpFetcher(const std::string& ca_file);

// The same fetch with the system trust store (loaded once).
Result<std::string> HttpGet(const std::string& url, const std::string& access_token,
                            std::chrono::milliseconds timeout);

}  // namespace isoguard::fhir
