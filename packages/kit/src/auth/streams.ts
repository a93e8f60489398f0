// The AUTH stream's contract: auth owns and writes it; every service reads it
// (revocations), so its definition lives here rather than in auth.
import { defineStreams, family, single } from "../streams.js";

export const AuthStreams = defineStreams({
  AUTH: {
    filters: ["auth.>"],
    /** One subject per aggregate. Ids are validated before they get here. */
    subjects: {
      org: family("auth.org"),
      slug: family("auth.slug"),
      email: family("auth.email"),
      user: family("auth.user"),
      session: family("auth.session"),
      serviceAccount: family("auth.service_account"),
      keys: single("auth.keys"),
      audit: family<"login" | "lockout">("auth.audit"),
      oauthState: family("auth.oauth_state"),
      signup: single("auth.signup"),
    },
  },
});
