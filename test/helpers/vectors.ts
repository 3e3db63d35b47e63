/** The test vectors of the Sellsy protocol notes (key `MyWebhookKey`, exact bytes, no trailing newline). */
export const KEY = 'MyWebhookKey';

export const VECTORS = {
  json: {
    body: Buffer.from(
      '{"eventType":"docslog","event":"step","relatedtype":"estimate","relatedid":"52437688","ownertype":"staff","ownerid":"1084","corpid":"929","timestamp":"1778187955"}',
    ),
    signature: 'dfa8f5a6105f244fe7b38c1b0c97b9a33dab2018',
  },
  jsonWithObject: {
    body: Buffer.from(
      '{"eventType":"docslog","event":"step","relatedtype":"invoice","relatedid":"987654","ownertype":"staff","ownerid":"1084","corpid":"929","timestamp":"1778280800","relatedobject":{"id":987654,"number":"FAC-2026-0042","status":"paid","subject":"Prestation d\\u00e9cembre","pdf_link":"https:\\/\\/example.invalid\\/x.pdf"}}',
    ),
    signature: '388f357b7186ae55b3fca4a2a33be9f3d84d9a74',
  },
  form: {
    body: Buffer.from(
      'notif=%7B%22eventType%22%3A%22thirdlog%22%2C%22event%22%3A%22updated%22%2C%22relatedtype%22%3A%22third%22%2C%22relatedid%22%3A%2238484%22%2C%22thirdtype%22%3A%22client%22%2C%22individual%22%3Afalse%2C%22ownertype%22%3A%22staff%22%2C%22ownerid%22%3A%22317%22%2C%22corpid%22%3A%22138%22%2C%22timestamp%22%3A%221778280746%22%7D',
    ),
    signature: '4ebc714fd6424f185ef8d4af8f2b98d0f1962b7a',
    notifSignature: '2a3a54c9d0a1e301c54d9bea3a4a717ca3e43832',
  },
} as const;
