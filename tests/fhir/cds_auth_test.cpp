// CDS Hooks 2.0 "Trusting CDS Clients" (cds_auth.h): JWTs signed in the test with keys made
// in the test (EC P-384 for ES384, RSA 2048 for RS384), sent to the CDS services of a server
// that trusts those keys for the EHR `https://ehr.example.org`, acting for dr-a. A valid
// token gets cards; every way a token can be wrong is a 401 naming what failed; API tokens
// keep working beside JWTs; the audit records the client's iss.
#include "fhir/cds_auth.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "cds_server_support.h"

namespace isoguard::server::testing {
namespace {

using fhir::Base64UrlDecode;
using fhir::Base64UrlEncode;
using fhir::CdsClients;

constexpr std::string_view kIss = "https://ehr.example.org";
constexpr std::string_view kAudBase = "https://isoguard.example";
constexpr std::string_view kOrderSign = "/cds-services/isoguard-order-sign";

using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

std::string Bin(const BIGNUM* bn, int bytes) {
  std::string out(static_cast<size_t>(bytes > 0 ? bytes : BN_num_bytes(bn)), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  return out;
}

std::string BnParam(const EVP_PKEY* key, const char* name, int bytes = 0) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &bn) != 1) throw std::runtime_error(name);
  std::string out = Bin(bn, bytes);
  BN_free(bn);
  return out;
}

// The test's keys, made once (an RSA key takes a while).
struct Keys {
  PkeyPtr ec{EVP_EC_gen("P-384"), EVP_PKEY_free};
  PkeyPtr rsa{EVP_RSA_gen(2048), EVP_PKEY_free};
  PkeyPtr other_ec{EVP_EC_gen("P-384"), EVP_PKEY_free};  // a key the server does not know
};
const Keys& TheKeys() {
  static const Keys* keys = new Keys();
  return *keys;
}

std::string EcJwk(const EVP_PKEY* key, const std::string& kid) {
  return R"({"kty":"EC","crv":"P-384","kid":")" + kid + R"(","use":"sig","x":")" +
         Base64UrlEncode(BnParam(key, OSSL_PKEY_PARAM_EC_PUB_X, 48)) + R"(","y":")" +
         Base64UrlEncode(BnParam(key, OSSL_PKEY_PARAM_EC_PUB_Y, 48)) + R"("})";
}
std::string RsaJwk(const EVP_PKEY* key, const std::string& kid) {
  return R"({"kty":"RSA","kid":")" + kid + R"(","alg":"RS384","n":")" +
         Base64UrlEncode(BnParam(key, OSSL_PKEY_PARAM_RSA_N)) + R"(","e":")" +
         Base64UrlEncode(BnParam(key, OSSL_PKEY_PARAM_RSA_E)) + R"("})";
}

// The JWS signature of `input` with SHA-384: ES384 as raw R || S, RS384 as PKCS #1 v1.5.
std::string SignJws(EVP_PKEY* key, bool ec, std::string_view input) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(input.data());
  if (EVP_DigestSignInit(md.get(), nullptr, EVP_sha384(), nullptr, key) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &len, in, input.size()) != 1) {
    throw std::runtime_error("sign");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in,
                     input.size()) != 1) {
    throw std::runtime_error("sign");
  }
  sig.resize(len);
  if (!ec) return sig;
  const auto* p = reinterpret_cast<const unsigned char*>(sig.data());
  ECDSA_SIG* parsed = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
  std::string raw = Bin(ECDSA_SIG_get0_r(parsed), 48) + Bin(ECDSA_SIG_get0_s(parsed), 48);
  ECDSA_SIG_free(parsed);
  return raw;
}

int64_t NowSeconds() { return kTestNowMs / 1000; }

// A JWT as an EHR makes it; each field can be spoiled by a test.
struct Jwt {
  std::string alg = "ES384";
  std::string typ = "JWT";
  std::string kid = "ec-1";
  std::string iss = std::string(kIss);
  std::string aud = std::string(kAudBase) + std::string(kOrderSign);
  int64_t iat = NowSeconds() - 5;
  int64_t exp = NowSeconds() + 240;
  std::string jti;
  EVP_PKEY* key = nullptr;  // null: the key that fits alg

  std::string Make() const {
    static std::atomic<int> counter{0};
    const std::string id = jti.empty() ? "jti-" + std::to_string(counter++) : jti;
    const std::string header =
        R"({"alg":")" + alg + R"(","typ":")" + typ + R"(","kid":")" + kid + R"("})";
    const std::string claims = R"({"iss":")" + iss + R"(","aud":")" + aud + R"(","exp":)" +
                               std::to_string(exp) + R"(,"iat":)" + std::to_string(iat) +
                               R"(,"jti":")" + id + R"(","tenant":"clinic-a"})";
    const std::string input = Base64UrlEncode(header) + "." + Base64UrlEncode(claims);
    if (alg != "ES384" && alg != "RS384") return input + "." + Base64UrlEncode("not-signed");
    const bool ec = alg == "ES384";
    EVP_PKEY* k = key != nullptr ? key : ec ? TheKeys().ec.get() : TheKeys().rsa.get();
    return input + "." + Base64UrlEncode(SignJws(k, ec, input));
  }
};

// The clients file: the EHR with an EC and an RSA key (the JWKS in a file of its own).
std::string ClientsToml(const std::string& jwks_file) {
  return "aud_base = \"" + std::string(kAudBase) + "/\"\n[[clients]]\niss = \"" +
         std::string(kIss) + "\"\naccount = \"dr-a\"\njwks_file = \"" + jwks_file + "\"\n";
}

class CdsJwtTest : public FhirWorldTest {
 protected:
  void SetUp() override {
    FhirWorldTest::SetUp();
    if (IsSkipped()) return;
    const Keys& keys = TheKeys();
    std::ofstream(dir_.File("ehr.jwks.json")) << R"({"keys":[)" << EcJwk(keys.ec.get(), "ec-1")
                                              << "," << RsaJwk(keys.rsa.get(), "rsa-1") << "]}";
    std::ofstream(dir_.File("clients.toml")) << ClientsToml("ehr.jwks.json");
    auto clients = CdsClients::Load(dir_.File("clients.toml"));
    ASSERT_TRUE(clients.ok()) << clients.error().ToString();
    fhir::FhirOptions options = FhirTestOptions();
    options.cds_clients = std::move(*clients);
    cds_ = std::make_unique<CdsServer>(w(), std::move(options));
    EnrollReady("p-1");
  }
  void TearDown() override { cds_.reset(); }

  Reply OrderSign(const std::string& bearer) {
    return cds_->Post(std::string(kOrderSign), bearer, OrderSignRequest("p-1", 120));
  }

  store::testing::TempDir dir_;
  std::unique_ptr<CdsServer> cds_;
};

TEST_P(CdsJwtTest, ValidEs384AndRs384TokensGetCardsAsTheClientsAccount) {
  Jwt es;
  auto r = OrderSign(es.Make());
  ASSERT_EQ(r.status, 200) << r.raw.body;
  auto topics = CardTopics(r);
  // 120 mg a day for 62 kg: the dose card, as dr-a's own call would show.
  EXPECT_NE(std::find(topics.begin(), topics.end(), "DOSE_OUT_OF_RANGE"), topics.end());
  Jwt rs;
  rs.alg = "RS384";
  rs.kid = "rsa-1";
  auto r2 = OrderSign(rs.Make());
  ASSERT_EQ(r2.status, 200) << r2.raw.body;
  EXPECT_EQ(CardTopics(r2), topics);

  // The audit: dr-a as the actor, the client's iss in the detail.
  w().audit().Flush();
  auto audit = Get("/v1/audit?actor_id=dr-a&limit=1000", "admin");
  ASSERT_EQ(audit.status, 200) << audit.raw.body;
  int by_client = 0;
  for (const json::value& item : audit.obj().at("items").as_array()) {
    const std::string detail(item.at("detail").as_string());
    if (detail.starts_with("CDS client " + std::string(kIss) + ": ")) {
      ++by_client;
      EXPECT_EQ(item.at("patient_id"), "p-1");
      EXPECT_EQ(item.at("status"), 200);
    }
  }
  EXPECT_EQ(by_client, 2);
}

TEST_P(CdsJwtTest, AnAudienceListHoldingTheServiceUrlIsAccepted) {
  const std::string url = std::string(kAudBase) + std::string(kOrderSign);
  const std::string header = R"({"alg":"ES384","typ":"JWT","kid":"ec-1"})";
  const std::string claims = R"({"iss":")" + std::string(kIss) +
                             R"(","aud":["https://other.example/cds-services",")" + url +
                             R"("],"exp":)" + std::to_string(NowSeconds() + 60) + R"(,"iat":)" +
                             std::to_string(NowSeconds()) + R"(,"jti":"list-1"})";
  const std::string input = Base64UrlEncode(header) + "." + Base64UrlEncode(claims);
  auto r = OrderSign(input + "." + Base64UrlEncode(SignJws(TheKeys().ec.get(), true, input)));
  EXPECT_EQ(r.status, 200) << r.raw.body;
}

TEST_P(CdsJwtTest, BadTokensAre401NamingWhatFailed) {
  struct Case {
    std::string name, token, message;
  };
  std::vector<Case> cases;
  auto add = [&](std::string name, const Jwt& j, std::string message) {
    cases.push_back({std::move(name), j.Make(), std::move(message)});
  };
  {
    Jwt j;
    j.key = TheKeys().other_ec.get();
    add("wrong signature", j, "signature does not verify");
  }
  {
    Jwt j;
    j.iat = NowSeconds() - 600;
    j.exp = NowSeconds() - 1;
    add("expired", j, "expired");
  }
  {
    Jwt j;
    j.exp = NowSeconds() + 3600;
    add("exp an hour away", j, "more than 5 minutes");
  }
  {
    Jwt j;
    j.aud = std::string(kAudBase) + "/cds-services/isoguard-patient-view";
    add("aud of another service", j, "aud must be this service's URL");
  }
  {
    Jwt j;
    j.aud = "https://evil.example" + std::string(kOrderSign);
    add("aud of another host", j, "aud must be this service's URL");
  }
  {
    Jwt j;
    j.iss = "https://stranger.example";
    add("unknown iss", j, "unknown iss 'https://stranger.example'");
  }
  {
    Jwt j;
    j.kid = "ec-9";
    add("unknown kid", j, "unknown kid 'ec-9'");
  }
  {
    Jwt j;
    j.alg = "none";
    add("alg none", j, "alg none");
  }
  {
    Jwt j;
    j.alg = "HS256";
    add("alg HS256", j, "alg 'HS256' is not accepted");
  }
  {
    Jwt j;
    j.alg = "RS384";  // signed with the RSA key, but naming the EC key
    add("alg of another key type", j, "does not fit key 'ec-1'");
  }
  {
    Jwt j;
    j.typ = "at+jwt";
    add("typ", j, "typ must be 'JWT'");
  }
  {
    Jwt j;
    j.iat = NowSeconds() + 600;
    add("iat in the future", j, "iat is in the future");
  }
  const std::string valid = Jwt{}.Make();
  const std::string payload = valid.substr(0, valid.rfind('.'));
  // Not a JWT's shape: neither an API token nor a JWT.
  cases.push_back({"two parts", payload, "neither an isoguard API token nor a CDS client JWT"});
  cases.push_back({"padding", valid + "=", "neither an isoguard API token nor a CDS client JWT"});
  cases.push_back({"not JSON", "bm90LWpzb24.bm90LWpzb24.c2ln", "malformed: the header"});
  cases.push_back({"signature cut", payload + "." + Base64UrlEncode("short"), "96 bytes"});
  cases.push_back({"too long", payload + "." + std::string(9000, 'A'), "longer than 8192 bytes"});
  for (const Case& c : cases) {
    auto r = OrderSign(c.token);
    EXPECT_EQ(r.status, 401) << c.name << ": " << r.raw.body;
    EXPECT_NE(r.str("detail").find(c.message), std::string::npos) << c.name << ": " << r.raw.body;
    EXPECT_EQ(r.str("field"), "Authorization") << c.name;
    ASSERT_NE(r.raw.header("www-authenticate"), nullptr) << c.name;
  }
}

TEST_P(CdsJwtTest, AReplayedJtiIsRefused) {
  Jwt j;
  j.jti = "once-only";
  const std::string token = j.Make();
  ASSERT_EQ(OrderSign(token).status, 200);
  auto again = OrderSign(token);
  EXPECT_EQ(again.status, 401) << again.raw.body;
  EXPECT_NE(again.str("detail").find("jti 'once-only' replayed"), std::string::npos)
      << again.raw.body;
  // Another client's jti of the same text is its own (replays are per iss) — here, the same
  // client with a fresh jti passes.
  EXPECT_EQ(OrderSign(Jwt{}.Make()).status, 200);
}

TEST_P(CdsJwtTest, FeedbackTakesATokenForItsOwnUrl) {
  const std::string body =
      R"({"feedback":[{"card":"9d0ad7d8-3ba1-4c7d-bd4f-1f6b4a3b7f11","outcome":"accepted","acceptedSuggestions":[],"outcomeTimestamp":"2026-09-14T14:01:00Z"}]})";
  Jwt j;
  j.aud = std::string(kAudBase) + std::string(kOrderSign) + "/feedback";
  auto r = cds_->Post(std::string(kOrderSign) + "/feedback", j.Make(), body);
  EXPECT_EQ(r.status, 200) << r.raw.body;
  // The service's own URL is not the feedback endpoint's.
  auto wrong = cds_->Post(std::string(kOrderSign) + "/feedback", Jwt{}.Make(), body);
  EXPECT_EQ(wrong.status, 401) << wrong.raw.body;
}

TEST_P(CdsJwtTest, IsoguardApiTokensStillWorkBesideJwts) {
  auto r = OrderSign(T("dr-a"));
  EXPECT_EQ(r.status, 200) << r.raw.body;
  auto junk = OrderSign("igt_not-a-real-token");
  EXPECT_EQ(junk.status, 401) << junk.raw.body;
  auto none = OrderSign("");
  EXPECT_EQ(none.status, 401) << none.raw.body;
}

TEST_P(CdsJwtTest, ADisabledAccountRefusesItsClient) {
  ASSERT_TRUE(w().service().SetAccountDisabled(nullptr, "dr-a", true).ok());
  auto r = OrderSign(Jwt{}.Make());
  EXPECT_EQ(r.status, 401) << r.raw.body;
  EXPECT_NE(r.str("detail").find("disabled"), std::string::npos) << r.raw.body;
}

INSTANTIATE_TEST_SUITE_P(Sqlite, CdsJwtTest, ::testing::Values(ApiBackend{"Sqlite", false}),
                         [](const auto& param_info) { return param_info.param.name; });
INSTANTIATE_TEST_SUITE_P(Postgres, CdsJwtTest, ::testing::Values(ApiBackend{"Postgres", true}),
                         [](const auto& param_info) { return param_info.param.name; });

// ---- The verifier and its file alone.

TEST(CdsJwtBase64Url, RoundTripsAndIsStrict) {
  for (const std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar", "\xff\xfe\x00"}) {
    auto back = Base64UrlDecode(Base64UrlEncode(s));
    ASSERT_TRUE(back.has_value()) << s;
    EXPECT_EQ(*back, s);
  }
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
  EXPECT_FALSE(Base64UrlDecode("Zm9v=").has_value());  // padding
  EXPECT_FALSE(Base64UrlDecode("Zm+v").has_value());   // base64, not base64url
  EXPECT_FALSE(Base64UrlDecode("Z").has_value());      // no whole byte
  EXPECT_FALSE(Base64UrlDecode("Zh").has_value());     // stray bits: "Zg" is the one spelling
  EXPECT_TRUE(Base64UrlDecode("Zg").has_value());
}

TEST(CdsJwtShape, OnlyThreeBase64UrlPartsLookLikeAJwt) {
  EXPECT_TRUE(CdsClients::LooksLikeJwt("eyJh.eyJi.c2ln"));
  EXPECT_TRUE(CdsClients::LooksLikeJwt("eyJh.eyJi."));  // alg none: refused by Verify, by name
  EXPECT_FALSE(CdsClients::LooksLikeJwt("igt_abcdef"));
  EXPECT_FALSE(CdsClients::LooksLikeJwt("a.b"));
  EXPECT_FALSE(CdsClients::LooksLikeJwt("a.b.c.d"));
  EXPECT_FALSE(CdsClients::LooksLikeJwt(".b.c"));
  EXPECT_FALSE(CdsClients::LooksLikeJwt("a.b.c="));
}

TEST(CdsJwtClientsFile, IsCheckedNamingTheKeyAtFault) {
  const std::string ec = EcJwk(TheKeys().ec.get(), "ec-1");
  struct Case {
    std::string toml, field, message;
  };
  auto client = [](const std::string& jwks) {
    return "[[clients]]\niss = \"https://ehr.example.org\"\naccount = \"dr-a\"\njwks = '" + jwks +
           "'\n";
  };
  const std::string base = "aud_base = \"https://isoguard.example\"\n";
  std::string small_rsa;
  {
    PkeyPtr rsa(EVP_RSA_gen(1024), EVP_PKEY_free);
    small_rsa = RsaJwk(rsa.get(), "small");
  }
  std::string private_ec = ec;
  private_ec.insert(private_ec.size() - 1, R"(,"d":"AAAA")");
  std::string off_curve = ec;
  {
    // y of another key: not a point of the curve (with overwhelming probability).
    const std::string y =
        Base64UrlEncode(BnParam(TheKeys().other_ec.get(), OSSL_PKEY_PARAM_EC_PUB_Y, 48));
    const size_t at = off_curve.find(R"("y":")") + 5;
    off_curve.replace(at, off_curve.find('"', at) - at, y);
  }
  const std::vector<Case> cases = {
      {client(R"({"keys":[)" + ec + "]}"), "clients.toml: aud_base", "base URL"},
      {base + "port = 1\n" + client(R"({"keys":[)" + ec + "]}"), "clients.toml: port",
       "unknown key"},
      {base, "clients.toml: clients", "at least one"},
      {base + client(R"({"keys":[]})"), "clients.toml: clients[0].jwks", "JWK Set"},
      {base + client(R"({"keys":[)" + ec + "," + ec + "]}"),
       "clients.toml: clients[0].jwks.keys[1].kid", "duplicate kid"},
      {base + client(R"({"keys":[)" + private_ec + "]}"), "clients.toml: clients[0].jwks.keys[0]",
       "private key"},
      {base + client(R"({"keys":[)" + small_rsa + "]}"), "clients.toml: clients[0].jwks.keys[0].n",
       "1024 bits"},
      {base + client(R"({"keys":[)" + off_curve + "]}"), "clients.toml: clients[0].jwks.keys[0]",
       "not a point of P-384"},
      {base + client(R"({"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]})"),
       "clients.toml: clients[0].jwks.keys[0].kty", "'EC'"},
      {base + client(R"({"keys":[)" + ec + "]}") + client(R"({"keys":[)" + ec + "]}"),
       "clients.toml: clients[1].iss", "duplicate iss"},
      {base + "[[clients]]\niss = \"x\"\naccount = \"dr-a\"\n", "clients.toml: clients[0]",
       "exactly one of jwks"},
  };
  for (const Case& c : cases) {
    auto r = CdsClients::Parse(c.toml, ".", "clients.toml");
    ASSERT_FALSE(r.ok()) << c.toml;
    EXPECT_EQ(r.error().kind, ErrorKind::kBadInput);
    EXPECT_EQ(r.error().field, c.field) << r.error().ToString();
    EXPECT_NE(r.error().message.find(c.message), std::string::npos) << r.error().ToString();
  }
  auto good = CdsClients::Parse(base + client(R"({"keys":[)" + ec + "]}"), ".", "clients.toml");
  ASSERT_TRUE(good.ok()) << good.error().ToString();
  EXPECT_EQ((*good)->aud_base(), "https://isoguard.example");
  EXPECT_EQ((*good)->AccountIds(), std::vector<std::string>{"dr-a"});
}

// `isoguard serve` checks the file at start: a client acting for no account, or for an
// account that is not a prescriber's or clinic staff's, is refused before serving.
TEST(CdsJwtServe, RefusesToStartWithAClientOfNoFittingAccount) {
  store::testing::TempDir dir;
  const std::string db = "sqlite:" + dir.File("s.db");
  const std::string bin = ISOGUARD_BINARY;
  auto run = [](const std::string& command) {
    std::string out;
    FILE* p = ::popen((command + " 2>&1").c_str(), "r");
    if (p == nullptr) return std::make_pair(-1, out);
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    const int status = ::pclose(p);
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
  };
  run(bin + " import /dev/null --db " + db);
  run(bin + " admin --db " + db + " create-org --id pharmacy --kind pharmacy --jurisdiction US");
  run(bin + " admin --db " + db + " create-user --id ph --org pharmacy --role pharmacist");
  std::ofstream(dir.File("ehr.jwks.json"))
      << R"({"keys":[)" << EcJwk(TheKeys().ec.get(), "ec-1") << "]}";
  for (const auto& [account, message] :
       {std::pair<std::string, std::string>{"dr-nobody", "no account 'dr-nobody'"},
        {"ph", "account 'ph' is not a prescriber or clinic staff account"}}) {
    std::ofstream(dir.File("clients.toml"))
        << "aud_base = \"https://isoguard.example\"\n[[clients]]\niss = \"https://ehr\"\n"
        << "account = \"" << account << "\"\njwks_file = \"ehr.jwks.json\"\n";
    auto [code, out] = run(bin + " serve --db " + db + " --listen 127.0.0.1:0 --cds-clients " +
                           dir.File("clients.toml"));
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find(message), std::string::npos) << out;
  }
  auto [code, out] = run(bin + " serve --db " + db + " --listen 127.0.0.1:0 --fhir-ca-file " +
                         dir.File("no-such.pem"));
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("--fhir-ca-file: cannot read"), std::string::npos) << out;
}

}  // namespace
}  // namespace isoguard::server::testing
