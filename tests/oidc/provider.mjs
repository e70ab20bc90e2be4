// A second, independent OpenID provider for the dashboard's tests: the certified
// node-oidc-provider, configured as ProConnect behaves (PKCE S256 required, userinfo answered as
// a signed JWT, acr values, RP-initiated logout), with JWT access tokens for the audience
// "temoin" so that a vault configured with this issuer accepts them.
//
// Usage: node provider.mjs PORT REDIRECT_URI POST_LOGOUT_URI ACCOUNTS_JSON
// ACCOUNTS_JSON maps an account id to its claims ({"sub": ..., "name": ..., "org": ..., "roles": [...]}).
// The sign-in is automatic: the account is the one last named by POST /test/account (the
// test's person at the keyboard: {"id": ..., "claims": {...}}), and the acr granted is the first of acr_values (or "eidas1").
// It prints "ready ISSUER" on stdout once listening.
import http from 'node:http';
import Provider from 'oidc-provider';

const [port, redirectUri, postLogoutUri, accountsJson] = process.argv.slice(2);
const accounts = JSON.parse(accountsJson);
const issuer = `http://127.0.0.1:${port}`;
let current = Object.keys(accounts)[0];

const configuration = {
  clients: [{
    client_id: 'temoin-dashboard',
    client_secret: 'temoin-dashboard-test-secret-of-some-length',
    redirect_uris: [redirectUri],
    post_logout_redirect_uris: [postLogoutUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    userinfo_signed_response_alg: 'RS256',
  }],
  pkce: { required: () => true },
  // A refresh token with every code: the client trades it for the API's token (RFC 8707).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  scopes: ['openid', 'profile', 'temoin'],
  claims: { openid: ['sub'], profile: ['name'], temoin: ['org', 'roles', 'departement'] },
  acrValues: ['eidas1', 'eidas2'],
  features: {
    devInteractions: { enabled: false },
    jwtUserinfo: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // The code's token reads userinfo only (no audience); the APIs' token, a JWT for
      // "temoin", is asked for with the refresh token and resource=urn:temoin.
      useGrantedResource: () => false,
      getResourceServerInfo: () => ({
        scope: 'temoin',
        audience: 'temoin',
        accessTokenFormat: 'jwt',
        accessTokenTTL: 300,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const account = accounts[token.accountId];
    if (!account) return undefined;
    const { sub, name, ...rest } = account;
    return rest;
  },
  findAccount: async (ctx, id) => {
    const account = accounts[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ ...account, sub: id }) };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // The dashboard runs on http://127.0.0.1 in the tests.
  cookies: { keys: ['temoin-test-cookie-key'] },
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params } = details;
  let result;
  if (prompt.name === 'login') {
    const acr = String(params.acr_values || 'eidas1').split(' ')[0];
    result = { login: { accountId: current, acr } };
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    if (prompt.details.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    grant.addResourceScope('urn:temoin', 'temoin');
    result = { consent: { grantId: await grant.save() } };
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/test/account') {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      const { id, claims } = JSON.parse(body);
      accounts[id] = claims;
      current = id;
      res.end(id);
    });
    return;
  }
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      res.statusCode = 500;
      res.end(String(err));
    });
    return;
  }
  callback(req, res);
}).listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
